"""A TCP proxy that resets a connection after a set number of request bytes.

The network a resumable upload is for: the connection drops mid-PATCH, the
server keeps what arrived, the client asks for the offset and goes on. A
connection takes the next budget from `cuts` (bytes from client to server); with
`from_patch` (the default) the count starts at the connection's first PATCH, so a
HEAD's connection, which aiohttp closes after it, wastes none; without it, from
the connection's first byte. Once the budgets are used up, traffic passes.
"""

from __future__ import annotations

import asyncio
import contextlib


class CuttingProxy:
    def __init__(self, port: int, cuts: list[int], *, from_patch: bool = True) -> None:
        self.port = port
        self.cuts = list(cuts)
        self.from_patch = from_patch
        self.made = 0  # cuts that happened
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port)
        budget: int | None = None if self.from_patch or not self.cuts else self.cuts.pop(0)

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter, cut: bool) -> None:
            nonlocal budget
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await source.read(65536):
                    if cut and budget is None and self.cuts and data.startswith(b"PATCH "):
                        budget = self.cuts.pop(0)
                    if cut and budget is not None:
                        if len(data) >= budget:
                            sink.write(data[:budget])
                            await sink.drain()
                            await asyncio.sleep(0.05)
                            self.made += 1
                            writer.transport.abort()
                            up_writer.transport.abort()
                            return
                        budget -= len(data)
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
