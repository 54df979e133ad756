"""A plain request body read straight into buffers that become the pieces, with no copy.

An event loop's plain protocol gets each read as a new bytes object: uvloop reads
into its own 256,000-byte buffer, then copies the bytes out, ~6-9% of a big
upload's CPU on the event loop's thread (benchmarks/RESULTS.md, history,
2026-12-01 08:17), and one read never brings more than that buffer holds. A
`BufferedProtocol` names the memory the loop reads into. While a large plain
body (Content-Length, not chunked, not compressed) arrives, the connection's
handler steps aside for a `DirectBody`: each read lands in a region of a buffer
it owns, and that region goes to the request's reader as a memoryview, so the
bytes are copied once, by the kernel, on their way to MD5 and the disk.

A region handed on is never written again: a buffer is only filled forward, and
a new one is made when too little of the last is left, so memory is freed when
the last piece that views it is written and hashed. Small reads (a slow client's)
are copied out instead, and their region is read into again: a trickle does not
pin a buffer per read. Reads never go past the body's declared length, so the
next request's bytes reach the handler, which takes the connection back at the
body's end.

Everything else the loop says to a protocol (the connection lost, its end of
file, write flow control) is passed on to the handler, whose state it is.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from aiohttp.streams import StreamReader

# Below this, a read is copied out and its region reused: a slow client's reads are
# small, and a region given away for each would hold a buffer's memory per trickle.
COPY_BELOW = 32 * 1024
# A buffer with less room than this left is set aside for a new one: reads into the
# last few KiB of a buffer would make many small pieces.
MIN_ROOM = 64 * 1024
# The buffer size: up to this much is read at a time (a quarter of the reads, and of
# the event loop's trips, of uvloop's 256,000 bytes), under glibc's mmap threshold
# (runtime/heap.py: 1 MiB) so that buffers come from the heap and reuse its pages
# rather than mapping (and faulting in) new ones.
BUFFER_SIZE = 1024 * 1024 - 4096


class BodyOwner(Protocol):
    """The connection handler a `DirectBody` stands in for."""

    def accepting_body(self) -> bool:
        """False once the connection is closing: what arrives is dropped."""
        ...

    def direct_body_done(self) -> None:
        """The body is complete: the handler takes the connection back."""
        ...

    def connection_lost(self, exc: BaseException | None) -> None: ...

    def eof_received(self) -> bool | None: ...

    def pause_writing(self) -> None: ...

    def resume_writing(self) -> None: ...


class DirectBodies:
    """How many bodies are read directly at once: at most `limit`, each holding a buffer.

    The transfer count alone cannot bound them: heads that arrive together are all
    parsed before the first of their requests takes a transfer slot.
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0

    def try_start(self) -> bool:
        if self.active >= self.limit:
            return False
        self.active += 1
        return True

    def end(self) -> None:
        self.active -= 1


class DirectBody(asyncio.BufferedProtocol):
    """The protocol of a connection while its request's plain body arrives; see the module."""

    def __init__(
        self,
        owner: BodyOwner,
        body: StreamReader,
        length: int,
        buffer_size: int,
        count: DirectBodies | None = None,
    ) -> None:
        self._owner = owner
        self._count = count  # started already; ended here, once
        self._body = body
        self._left = length  # bytes of the body still to come
        self._buffer_size = buffer_size
        self._buffer = bytearray()
        self._filled = 0  # bytes of `_buffer` given away as pieces
        self._region = memoryview(self._buffer)  # what the last get_buffer handed out

    def get_buffer(self, sizehint: int) -> memoryview:
        room = len(self._buffer) - self._filled
        if room < MIN_ROOM and room < self._left:
            # bytearray zeroes its memory: cheaper than the copy it replaces.
            self._buffer = bytearray(min(self._buffer_size, self._left))
            self._filled = 0
            room = len(self._buffer)
        start = self._filled
        self._region = memoryview(self._buffer)[start : start + min(room, self._left)]
        return self._region

    def buffer_updated(self, nbytes: int) -> None:
        if not self._owner.accepting_body():
            return  # answered and closing: dropped, and the region read into again
        if nbytes < COPY_BELOW:
            piece: bytes | memoryview = bytes(self._region[:nbytes])
        else:
            piece = self._region[:nbytes]
            self._filled += nbytes
        self._left -= nbytes
        self._body.feed_data(piece)  # type: ignore[arg-type]  # aiohttp takes any buffer
        if not self._left:
            self._body.feed_eof()
            self._region = memoryview(b"")
            self._end()
            self._owner.direct_body_done()

    def _end(self) -> None:
        count, self._count = self._count, None
        self._buffer = bytearray()  # a view handed on keeps its own buffer alive
        if count is not None:
            count.end()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._end()
        self._owner.connection_lost(exc)

    def eof_received(self) -> bool | None:
        return self._owner.eof_received()

    def pause_writing(self) -> None:
        self._owner.pause_writing()

    def resume_writing(self) -> None:
        self._owner.resume_writing()
