"""`DirectBody` on real loopback connections, on uvloop's loop and asyncio's own.

The connection handler steps aside for it while a large plain body arrives
(runtime/connections.py; the server-level tests of that are in test_hostile_clients.py
and test_raw_upload.py). Here a small owner stands in for the handler, so what the
protocol hands on can be looked at piece by piece: the body whole and in order, no
region written again once handed on, large reads as views and small ones as copies,
not one byte past the declared length, and the connection's end passed on.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from aiohttp.base_protocol import BaseProtocol
from aiohttp.streams import StreamReader

from streamproxy.runtime.directbody import COPY_BELOW, DirectBodies, DirectBody

from .conftest import random_bytes

LoopFactory = Callable[[], asyncio.AbstractEventLoop]


def _loops() -> list[Any]:
    factories: list[Any] = [pytest.param(asyncio.new_event_loop, id="asyncio")]
    try:
        import uvloop
    except ImportError:  # the speed extra is in the dev install: never missing in make test
        return factories
    return [*factories, pytest.param(uvloop.new_event_loop, id="uvloop")]


def run(factory: LoopFactory, main: Coroutine[Any, Any, None]) -> None:
    loop = factory()
    try:
        loop.run_until_complete(main)
    finally:
        loop.close()


class Owner(BaseProtocol):
    """A connection handler in miniature: gives the connection to a `DirectBody` for
    `length` bytes at once, takes it back at the body's end, and keeps what follows."""

    def __init__(self, loop: asyncio.AbstractEventLoop, length: int, buffer_size: int) -> None:
        super().__init__(loop)
        self.body = StreamReader(self, 2**16, loop=loop)
        self.length = length
        self.buffer_size = buffer_size
        self.after = bytearray()  # bytes that came after the body, to this protocol
        self.accepting = True
        self.back = asyncio.Event()
        self.lost = asyncio.Event()
        self.count = DirectBodies(limit=1)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        assert self.count.try_start()
        assert not self.count.try_start()  # the limit
        reader = DirectBody(self, self.body, self.length, self.buffer_size, self.count)
        transport.set_protocol(reader)

    def data_received(self, data: bytes) -> None:
        self.after += data

    def pause_reading(self) -> None:  # the reader's flow control, as a handler's goes
        assert self.transport is not None
        self.transport.pause_reading()

    def resume_reading(self, resume_parser: bool = True) -> None:
        if self.transport is not None:
            self.transport.resume_reading()

    def accepting_body(self) -> bool:
        return self.accepting

    def direct_body_done(self) -> None:
        assert self.transport is not None
        self.transport.set_protocol(self)
        self.back.set()

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if not self.body.is_eof():
            self.body.set_exception(ConnectionResetError("lost"))
        self.lost.set()


async def connect(length: int, buffer_size: int) -> tuple[Owner, asyncio.StreamWriter, Any]:
    """A server whose connections are `Owner`s, one connection to it, and its owner."""
    loop = asyncio.get_running_loop()
    made: asyncio.Future[Owner] = loop.create_future()

    def make() -> Owner:
        owner = Owner(loop, length, buffer_size)
        made.set_result(owner)  # one connection per server
        return owner

    server = await loop.create_server(make, "127.0.0.1", 0)
    _, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    owner = await asyncio.wait_for(made, 10)  # made when the server's loop accepts
    return owner, writer, server


async def serve(
    length: int, buffer_size: int, send: Callable[[asyncio.StreamWriter], Coroutine[Any, Any, None]]
) -> tuple[Owner, list[bytes | memoryview]]:
    """One connection to a fresh owner; `send` writes; the pieces the reader gave."""
    owner, writer, server = await connect(length, buffer_size)
    pieces: list[bytes | memoryview] = []
    try:
        sending = asyncio.ensure_future(send(writer))
        while True:
            try:
                piece, _ = await asyncio.wait_for(owner.body.readchunk(), 10)
            except ConnectionResetError:
                break
            if not piece:
                break
            pieces.append(piece)
        await asyncio.wait_for(sending, 10)
    finally:
        writer.close()
        server.close()
    return owner, pieces


@pytest.mark.parametrize("extra", [13, 0], ids=["odd", "whole-buffers"])
@pytest.mark.parametrize("factory", _loops())
def test_a_fast_body_comes_whole_as_views_and_what_follows_goes_back(
    factory: LoopFactory, extra: int
) -> None:
    """`whole-buffers`: the body ends exactly where a buffer does."""
    body = random_bytes(5 * 1024 * 1024 + extra, seed=11)
    following = b"GET /next HTTP/1.1\r\n\r\n"

    async def send(writer: asyncio.StreamWriter) -> None:
        writer.write(body + following)  # the next request in the same write
        await writer.drain()

    async def main() -> None:
        owner, pieces = await serve(len(body), 256 * 1024, send)
        await asyncio.wait_for(owner.back.wait(), 10)
        for _ in range(100):  # what follows arrives after the body, to the owner
            if len(owner.after) >= len(following):
                break
            await asyncio.sleep(0.01)
        # Every piece still holds its bytes once all have come: no region was read into twice.
        assert b"".join(pieces) == body
        assert bytes(owner.after) == following
        assert owner.count.active == 0  # ended with the body, once
        assert all(len(piece) <= 256 * 1024 for piece in pieces)
        views = [piece for piece in pieces if isinstance(piece, memoryview)]
        assert sum(len(view) for view in views) > len(body) // 2, [len(p) for p in pieces]
        assert all(len(view) >= COPY_BELOW for view in views)

    run(factory, main())


@pytest.mark.parametrize("factory", _loops())
def test_a_trickle_is_copied_out_and_its_region_reused(factory: LoopFactory) -> None:
    """Small reads come as bytes (a slow client does not pin a buffer per read);
    between them, large ones still come as views."""
    body = random_bytes(600 * 1024, seed=12)
    cuts = [0, 100, 1_000, 5_000, 300 * 1024, 300 * 1024 + 7, len(body)]

    async def send(writer: asyncio.StreamWriter) -> None:
        for start, end in itertools.pairwise(cuts):
            writer.write(body[start:end])
            await writer.drain()
            await asyncio.sleep(0.05)

    async def main() -> None:
        owner, pieces = await serve(len(body), 1024 * 1024, send)
        assert b"".join(pieces) == body
        small = [piece for piece in pieces if len(piece) < COPY_BELOW]
        assert small and all(type(piece) is bytes for piece in small), [len(p) for p in pieces]
        assert owner.back.is_set()

    run(factory, main())


@pytest.mark.parametrize("factory", _loops())
def test_a_body_cut_short_passes_the_loss_on(factory: LoopFactory) -> None:
    body = random_bytes(1024 * 1024, seed=13)

    async def send(writer: asyncio.StreamWriter) -> None:
        writer.write(body[: len(body) // 2])
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    async def main() -> None:
        owner, pieces = await serve(len(body), 256 * 1024, send)
        await asyncio.wait_for(owner.lost.wait(), 10)
        assert not owner.back.is_set()
        assert owner.count.active == 0  # ended with the connection
        assert b"".join(pieces) == body[: len(b"".join(pieces))]
        assert len(b"".join(pieces)) <= len(body) // 2

    run(factory, main())


@pytest.mark.parametrize("factory", _loops())
def test_an_owner_that_stopped_accepting_gets_nothing_more(factory: LoopFactory) -> None:
    """Once the handler has answered and is closing, the rest of the body is dropped."""
    body = random_bytes(2 * 1024 * 1024, seed=14)
    first = 200 * 1024

    async def main() -> None:
        owner, writer, server = await connect(len(body), 256 * 1024)
        writer.write(body[:first])
        await writer.drain()
        received = 0
        while received < first:
            received += len(await asyncio.wait_for(owner.body.readany(), 10))
        owner.accepting = False
        writer.write(body[first:])
        await writer.drain()
        with pytest.raises(TimeoutError):  # nothing more is queued for the reader
            await asyncio.wait_for(owner.body.readchunk(), 0.3)
        assert not owner.body.is_eof()
        writer.close()
        server.close()

    run(factory, main())
