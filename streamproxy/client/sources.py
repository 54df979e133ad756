"""What an upload reads from: a file on disk, bytes, or an async iterator of chunks.

A file is read chunk by chunk in a worker thread while the request goes out, so
a large file never sits in memory. When the size is known it is declared
(`Content-Length`), which lets the service refuse an oversized file before the
body is sent; the bytes sent are then checked against it, so a file that
changes under the upload fails loudly instead of being stored cut short.
"""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from aiohttp.payload import AsyncIterablePayload

from .errors import SOURCE_CHANGED, MediaError

# (bytes done, total bytes or None when unknown); raising from it aborts the transfer.
Progress = Callable[[int, int | None], None]
UploadSource = str | os.PathLike[str] | bytes | bytearray | memoryview | AsyncIterable[bytes]

DEFAULT_CHUNK = 256 * 1024


@dataclass
class Body:
    """An upload's bytes: the file name to send, the size if known, and the chunks."""

    file_name: str | None
    size: int | None
    chunks: AsyncIterable[bytes]
    file: IO[bytes] | None = None

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def open_body(
    source: UploadSource, file_name: str | None, size: int | None, chunk_size: int = DEFAULT_CHUNK
) -> Body:
    """Open `source`; a path is opened here, so a missing file fails before any request."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
        return Body(file_name, len(data), _slices(data, chunk_size))
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        file = path.open("rb")
        try:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise IsADirectoryError(f"not a regular file: {path}")
        except BaseException:
            file.close()
            raise
        name = path.name if file_name is None else file_name
        return Body(name, info.st_size, _read_file(file, info.st_size, chunk_size), file)
    if isinstance(source, AsyncIterable):
        return Body(file_name, size, source)
    raise TypeError(f"cannot upload a {type(source).__name__}: give a path, bytes or chunks")


async def _slices(data: bytes, chunk_size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), chunk_size):
        yield data[start : start + chunk_size]


async def _read_file(file: IO[bytes], size: int, chunk_size: int) -> AsyncIterator[bytes]:
    remaining = size
    while remaining > 0:
        chunk = await asyncio.to_thread(file.read, min(chunk_size, remaining))
        if not chunk:
            break
        remaining -= len(chunk)
        yield chunk


class Counted:
    """Chunks passed through with progress reports, the source held to its size.

    What the source or the progress callback raises is kept in `failure`:
    aiohttp wraps it in a connection error, and the upload re-raises the
    original (a caller's own exception, a local read error) instead.
    """

    def __init__(
        self, chunks: AsyncIterable[bytes], size: int | None, progress: Progress | None
    ) -> None:
        self.chunks = chunks
        self.size = size
        self.progress = progress
        self.failure: BaseException | None = None

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._counted():
                yield chunk
        except BaseException as error:
            self.failure = error
            raise

    async def _counted(self) -> AsyncIterator[bytes]:
        done, size, progress = 0, self.size, self.progress
        if progress is not None:
            progress(0, size)
        async for chunk in self.chunks:
            if not chunk:
                continue
            done += len(chunk)
            if size is not None and done > size:
                raise MediaError(None, SOURCE_CHANGED, f"the source gave more than {size} bytes")
            yield chunk
            if progress is not None:
                progress(done, size)
        if size is not None and done != size:
            raise MediaError(None, SOURCE_CHANGED, f"the source gave {done} bytes, not {size}")


class ChunkPayload(AsyncIterablePayload):
    """aiohttp's async-iterable payload with a declared size, so the form has a length."""

    def __init__(self, chunks: AsyncIterable[bytes], size: int | None, **kwargs: Any) -> None:
        super().__init__(chunks, **kwargs)
        self._size = size
