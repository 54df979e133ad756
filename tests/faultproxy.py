"""A TCP proxy in front of moto that can fail the way object storage fails.

`cut()` is an outage: live connections are reset and new ones dropped at once.
`reject(status, code)` makes every request get that S3 error, as a bucket over
quota would answer. `restore()` passes traffic through again.
"""

from __future__ import annotations

import asyncio
import contextlib


class FaultProxy:
    def __init__(self, target_port: int) -> None:
        self._target_port = target_port
        self._mode = "pass"
        self._canned = b""
        self._live: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def cut(self) -> None:
        self._mode = "down"
        for writer in list(self._live):
            writer.transport.abort()
        self._live.clear()

    def restore(self) -> None:
        self._mode = "pass"

    def reject(self, status: int, code: str) -> None:
        body = f"<Error><Code>{code}</Code><Message>{code} (fault proxy)</Message></Error>"
        self._canned = (
            f"HTTP/1.1 {status} Refused\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n{body}"
        ).encode()
        self._mode = "reject"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode == "down":
            writer.transport.abort()
            return
        if self._mode == "reject":
            await self._answer_canned(reader, writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._target_port)
        except OSError:
            writer.transport.abort()
            return
        self._live |= {writer, up_writer}
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            for side in (writer, up_writer):
                self._live.discard(side)
                side.transport.abort()

    async def _answer_canned(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        with contextlib.suppress(OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").lower().split("\r\n")
            length = next(
                (
                    int(line.split(":", 1)[1])
                    for line in lines
                    if line.startswith("content-length:")
                ),
                0,
            )
            if not any(line.startswith("expect:") for line in lines):
                await reader.readexactly(length)
            answer = self._canned
            if head.startswith(b"HEAD "):  # the headers only, as HTTP has it
                answer = answer.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
            writer.write(answer)
            await writer.drain()
        writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while data := await reader.read(256 * 1024):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
