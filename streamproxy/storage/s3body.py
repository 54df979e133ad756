"""A part buffer as a request body that aiohttp streams without copying it whole.

Given a bytearray, aiohttp copies it whole (it slices it, then joins it to the
headers), and the transport keeps what the socket has not yet taken: about
three copies of every 8 MiB part. Given a BytesIO, it reads 64 KiB at a time
and waits for the socket between reads. `PartReader` is such a BytesIO over
our own buffer, so a part exists once, in the buffer we reuse.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed import WriteableBuffer


class PartReader(io.BytesIO):
    """Read-only, seekable view of `buffer` (botocore seeks to measure, sign and retry)."""

    def __init__(self, buffer: bytearray) -> None:
        super().__init__()
        self._view = memoryview(buffer)
        self._position = 0

    def getbuffer(self) -> memoryview:
        return self._view[:]  # a view of the view: releasing it leaves ours intact

    def getvalue(self) -> bytes:
        return bytes(self._view)

    def read(self, size: int | None = -1) -> bytes:
        start = self._position
        end = len(self._view) if size is None or size < 0 else min(start + size, len(self._view))
        self._position = max(start, end)
        return bytes(self._view[start:end])

    read1 = read

    def readinto(self, target: WriteableBuffer) -> int:
        data = self.read(len(memoryview(target)))
        memoryview(target)[: len(data)] = data
        return len(data)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: len(self._view)}
        self._position = max(0, base[whence] + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def __len__(self) -> int:
        return len(self._view) - self._position

    def release(self) -> bool:
        """Let go of the buffer; False if something still holds a view of it."""
        try:
            self._view.release()
        except BufferError:
            return False
        return True
