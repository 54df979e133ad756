"""A TCP proxy that resets a connection after a set number of request bytes.

The network a resumable upload is for: the connection drops mid-PATCH, the
server keeps what arrived, the client asks for the offset and goes on.

With `from_patch` (the default) `cuts` are budgets of PATCH traffic: bytes from
client to server on connections since their first PATCH, counted across
connections; when one runs out, the connection carrying the byte that spends it
is cut, and the next budget starts. A PATCH that ends otherwise (the server
answers 409 while the broken request still holds the upload, the client drops
the connection) leaves the rest of the budget to the next one, so every planned
cut happens once the client has sent as many PATCH bytes as the budgets add up
to, whatever the timing; a HEAD's connection spends none. Without `from_patch`,
each connection takes the next budget, counted from its first byte.
Once the budgets are used up, traffic passes.

A cut: the bytes up to it are handed to the kernel for the server, nothing more
of the server's answer reaches the client, and both connections are reset.
What the server keeps of a broken request is what it read before it saw the
reset (bytes still in its buffers go with the connection), so with `taken` (the
server's count of body bytes taken in: its received-bytes metric) a cut first
waits until the server has taken every body byte of the request passed on, or
has answered it: then it keeps exactly what was sent, and a client that needs
progress after each cut (tus-js-client's retries) gets it whatever the timing.
A draft creation (a POST with `Upload-Draft-Interop-Version`) is cut only once
the server's `104 Upload Resumption Supported` has passed: it carries the
upload's URL, without which no client can resume (the server sends it once the
upload exists, before it reads the body).

The requests are followed by Content-Length (enough for these clients); the
body counts assume one request at a time, as the tests' clients send them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

_POLL = 0.005  # seconds between looks at `taken` while a cut waits for the server


class _Framing:
    """A connection's request stream as it passes: where each head ends, and how many
    body bytes of the current request have passed."""

    def __init__(self) -> None:
        self._pending = b""  # a head not complete yet
        self._left = 0  # body bytes of the current request still to come
        self.body = 0  # body bytes of the current request passed so far
        self.draft_creation = False  # the current request creates a draft upload

    def feed(self, data: bytes) -> bool:
        """Follow `data`, about to be passed on; True if a request's head completed in it."""
        started = False
        while data:
            if self._left:
                taken = min(self._left, len(data))
                self._left -= taken
                self.body += taken
                data = data[taken:]
                continue
            self._pending += data
            head, found, data = self._pending.partition(b"\r\n\r\n")
            if not found:
                return started
            self._pending = b""
            self._start(head.lower())
            started = True
        return started

    def _start(self, head: bytes) -> None:
        lines = (line.partition(b":") for line in head.split(b"\r\n")[1:])
        fields = {name.strip(): value.strip() for name, _, value in lines}
        assert b"transfer-encoding" not in fields, "chunked request bodies are not followed"
        self._left = int(fields.get(b"content-length", b"0"))
        self.body = 0
        self.draft_creation = (
            head.startswith(b"post ") and b"upload-draft-interop-version" in fields
        )


class CuttingProxy:
    def __init__(
        self,
        port: int,
        cuts: list[int],
        *,
        from_patch: bool = True,
        taken: Callable[[], float] | None = None,
    ) -> None:
        self.port = port
        self.cuts = list(cuts)
        self.from_patch = from_patch
        self.taken = taken
        self.made = 0  # cuts that happened
        self.server: asyncio.Server | None = None
        self._left: int | None = None  # from_patch: PATCH bytes until the next cut

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    def _budget(self) -> int | None:
        """The PATCH bytes left before the next cut (None: no cut planned any more)."""
        if self._left is None and self.cuts:
            self._left = self.cuts.pop(0)
        return self._left

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        # Without from_patch: this connection's own budget, from its first byte.
        own: int | None = None if self.from_patch or not self.cuts else self.cuts.pop(0)
        counting = not self.from_patch  # with from_patch: since this connection's first PATCH
        framing = _Framing()
        taken_before = 0.0  # the server's `taken` when the current request started
        cutting = False
        told = asyncio.Event()  # the client has the server's 104
        answered = asyncio.Event()  # the server answered the current request, or went

        def pass_on(data: bytes) -> None:
            nonlocal taken_before
            if framing.feed(data):
                answered.clear()
                told.clear()
                if self.taken is not None:
                    taken_before = self.taken()  # nothing of this request can be in it yet
            up_writer.write(data)

        async def server_took_it() -> None:
            """Until the server has taken the request's body passed on, or answered it."""
            if self.taken is None:
                return
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 60
            while not answered.is_set():
                if self.taken() >= taken_before + framing.body:
                    return
                assert loop.time() < deadline, (
                    "the server did not take the bytes sent within a minute"
                )
                await asyncio.sleep(_POLL)

        async def cut(last: bytes) -> None:
            nonlocal cutting
            cutting = True  # from here on, only a 104 of the answer goes to the client
            # Every byte passed on reaches the kernel before the reset (drain with a
            # zero limit returns once the transport's buffer is empty).
            up_writer.transport.set_write_buffer_limits(0)
            pass_on(last)
            with contextlib.suppress(OSError):
                await up_writer.drain()
            await server_took_it()
            if framing.draft_creation:
                await told.wait()
            self.made += 1
            writer.transport.abort()
            up_writer.transport.abort()

        async def request() -> None:
            nonlocal own, counting
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await reader.read(65536):
                    if not counting and data.startswith(b"PATCH "):
                        counting = True
                    left = (self._budget() if self.from_patch else own) if counting else None
                    if left is not None:
                        if len(data) >= left:
                            self._left = own = None
                            await cut(data[:left])
                            return
                        if self.from_patch:
                            self._left = left - len(data)
                        else:
                            own = left - len(data)
                    pass_on(data)
                    await up_writer.drain()
            up_writer.close()

        async def answer() -> None:
            try:
                with contextlib.suppress(OSError, asyncio.CancelledError):
                    while data := await up_reader.read(65536):
                        interim = data.startswith(b"HTTP/1.1 1")  # 100 Continue, 104
                        resumable = interim and b"HTTP/1.1 104 " in data
                        if not interim:
                            answered.set()
                        if cutting and not resumable:
                            continue  # the answer to a request broken off: not the client's
                        writer.write(data)
                        await writer.drain()
                        if resumable:
                            told.set()
                writer.close()
            finally:  # the server went: nothing more to wait for
                answered.set()
                told.set()

        await asyncio.gather(request(), answer())
