"""Sources for URL-import tests: real HTTP servers on loopback that misbehave on cue.

A `Source` is a raw asyncio server (no HTTP library in the way) that answers each
path with a script of steps: bytes to send, seconds to wait, or HOLD to stay silent
until the test ends. It records every request it reads and counts connections, so
a test can prove that a refused URL never reached it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cache

HOLD = None  # a step: stay silent (headers sent, or not) until the test ends
Step = bytes | float | None


@dataclass
class Seen:
    """One request a source read: its target and headers (names in lower case)."""

    target: str
    headers: dict[str, str]


@dataclass
class Source:
    host: str
    port: int = 0
    tls: ssl.SSLContext | None = None
    routes: dict[str, Callable[[], Sequence[Step]]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _writers: set[asyncio.StreamWriter] = field(default_factory=set)
    _arrived: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path

    def script(self, path: str, *steps: Step) -> str:
        """Answer `path` with these steps; returns the path's full URL."""
        self.routes[path] = lambda: steps
        return self.url(path)

    def file(
        self,
        path: str,
        body: bytes,
        status: int = 200,
        headers: dict[str, str] | None = None,
    ) -> str:
        """Answer `path` with a complete response (Content-Length set unless given)."""
        return self.script(path, response_head(status, len(body), headers) + body)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        return self.script(path, response_head(status, 0, {"Location": location}))

    async def first_request(self) -> None:
        """Wait until a request has been read."""
        await asyncio.wait_for(self._arrived.wait(), 10)

    async def start(self) -> Source:
        self._server = await asyncio.start_server(self._serve, self.host, self.port, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            target = lines[0].split(" ")[1]
            headers = {}
            for line in lines[1:]:
                if ":" in line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            self.seen.append(Seen(target, headers))
            self._arrived.set()
            path = target.split("?")[0]
            if path.startswith("http://"):  # a proxy's absolute-form target
                path = "/" + path.split("/", 3)[3]
            steps = self.routes.get(path, lambda: [response_head(404, 9) + b"not found"])()
            for step in steps:
                if isinstance(step, bytes):
                    writer.write(step)
                    await writer.drain()
                elif isinstance(step, float | int):
                    await asyncio.sleep(step)
                else:
                    await asyncio.Event().wait()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            self._tasks.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError, OSError, asyncio.CancelledError):
                await writer.wait_closed()


def response_head(status: int, length: int | None, headers: dict[str, str] | None = None) -> bytes:
    lines = [f"HTTP/1.1 {status} X"]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def gzipped(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=6)


@cache
def gzip_bomb(decoded_size: int) -> bytes:
    """A gzip member of `decoded_size` zero bytes: about 1/1000 of that on the wire."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1024 * 1024)
    parts = [compressor.compress(block) for _ in range(decoded_size // len(block))]
    parts.append(compressor.flush())
    return b"".join(parts)
