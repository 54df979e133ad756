"""A pass-through proxy in front of an S3 server that logs every request and its answer.

What it is for: counting the S3 requests an upload costs (by operation:
PutObject, UploadPart, CompleteMultipartUpload, HeadObject...), and seeing on
the wire what the object store answered, so a test can tell the service's
mistakes from the store's (two conditional creates of one key both answered
200 is the store breaking its promise, whatever the service did).

Each connection carries one request: the proxy asks the server to close after
its answer (`Connection: close`), so the head at the start of a connection is
every request's head, with moto (which closes anyway) and with servers that
keep connections alive. The answer's status line is read as it passes; the
bytes are not touched.

An entry is logged as soon as its answer's status passes, before the answer
goes on, so whatever the service has been answered is in the log; `settled()`
waits until every request that reached the proxy has been answered (or ended),
for a count that must not miss one still on the wire. A request that reached
the proxy whole is answered even when its client died meanwhile (a killed
service): once settled, the server has carried out everything it was sent.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit


@dataclass(frozen=True)
class Logged:
    """One request as the server saw it, and the status it answered (0: no answer)."""

    operation: str
    key: str  # the object key, "" for a bucket-level request
    conditional_create: bool  # carried `If-None-Match: *`
    status: int
    prefix: str = ""  # a listing's `prefix` (which part of the bucket it lists)


def operation(method: str, key: str, query: dict[str, list[str]], headers: dict[str, str]) -> str:
    """The S3 API operation a path-style request is, by method, query and headers."""
    copy = "x-amz-copy-source" in headers
    if method == "PUT":
        if "partNumber" in query:
            return "UploadPartCopy" if copy else "UploadPart"
        return ("CopyObject" if copy else "PutObject") if key else "CreateBucket"
    if method == "POST":
        if "uploads" in query:
            return "CreateMultipartUpload"
        if "uploadId" in query:
            return "CompleteMultipartUpload"
        return "DeleteObjects" if "delete" in query else "PostObject"
    if method == "DELETE":
        if "uploadId" in query:
            return "AbortMultipartUpload"
        return "DeleteObject" if key else "DeleteBucket"
    if method == "HEAD":
        return "HeadObject" if key else "HeadBucket"
    if method == "GET":
        if "uploads" in query:
            return "ListMultipartUploads"
        if "uploadId" in query:
            return "ListParts"
        return "GetObject" if key else "ListObjects"
    return method


def _parse(head: bytes) -> tuple[str, str, dict[str, list[str]], dict[str, str]]:
    request_line, *lines = head.decode("latin-1").split("\r\n")
    method, target, _ = request_line.split(" ", 2)
    parts = urlsplit(target)
    query = parse_qs(parts.query, keep_blank_values=True)
    _, _, key = unquote(parts.path).lstrip("/").partition("/")  # path style: /bucket/key
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if colon:
            headers[name.strip().lower()] = value.strip()
    return method.upper(), key, query, headers


def _closing(head: bytes) -> bytes:
    """The request head with `Connection: close` in place of any Connection header."""
    lines = [
        line
        for line in head.removesuffix(b"\r\n\r\n").split(b"\r\n")
        if not line.lower().startswith(b"connection:")
    ]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"


@dataclass
class S3Log:
    """The proxy: `endpoint` for the service, `entries` of what passed, `counts()` by operation."""

    target_port: int
    entries: list[Logged] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _live: set[asyncio.StreamWriter] = field(default_factory=set)
    _open: int = 0  # requests accepted and not yet answered (or ended)
    _settled: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self._settled.set()

    async def start(self) -> S3Log:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._live):
            writer.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()

    @property
    def endpoint(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def counts(
        self, since: int = 0, ignore: Callable[[Logged], bool] = lambda entry: False
    ) -> Counter[str]:
        """Requests by operation, from entry number `since` on, but those `ignore` picks."""
        return Counter(entry.operation for entry in self.entries[since:] if not ignore(entry))

    async def settled(self) -> None:
        """Return once every request that reached the proxy has its answer logged (or
        ended without one): counted from the accept, so a head still on its way counts."""
        await self._settled.wait()

    def _begun(self) -> None:
        self._open += 1
        self._settled.clear()

    def _ended(self) -> None:
        self._open -= 1
        if not self._open:
            self._settled.set()

    def accepted_creates(self, key: str) -> int:
        """Conditional creates of `key` (`If-None-Match: *`) the server answered with success."""
        return sum(
            1
            for entry in self.entries
            if entry.key == key and entry.conditional_create and 200 <= entry.status < 300
        )

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._begun()
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.transport.abort()
            self._ended()
            return
        method, key, query, headers = _parse(head)
        up_writer.write(_closing(head))

        def record(status: int) -> None:
            # As soon as the status is seen, before the answer goes on: by the time
            # the service has its answer, the log has the request.
            conditional = headers.get("if-none-match") == "*"
            listed = query.get("prefix", [""])[0]
            entry = Logged(operation(method, key, query, headers), key, conditional, status, listed)
            self.entries.append(entry)
            self._ended()

        status = _Status(record)
        self._live |= {writer, up_writer}
        try:
            length = None if "transfer-encoding" in headers else headers.get("content-length", "0")
            whole = None if length is None else int(length)
            await asyncio.gather(
                _send(reader, up_writer, whole), _answer(up_reader, writer, status.feed)
            )
        finally:
            for side in (writer, up_writer):
                self._live.discard(side)
            up_writer.transport.abort()
            if not status.final:
                record(0)


class _Status:
    """Reads the final status code off the answer as it streams past (skipping 1xx)."""

    def __init__(self, on_final: Callable[[int], None]) -> None:
        self._pending = b""
        self._on_final = on_final
        self.final = 0

    def feed(self, data: bytes) -> None:
        if self.final:
            return
        self._pending += data
        while b"\r\n\r\n" in self._pending:
            head, _, self._pending = self._pending.partition(b"\r\n\r\n")
            code = int(head.split(b" ", 2)[1])
            if code >= 200:
                self.final = code
                self._on_final(code)
                return


async def _send(
    client: asyncio.StreamReader, server: asyncio.StreamWriter, length: int | None
) -> None:
    """The request body, until the client closes. A client that died mid-request breaks
    the request off at the server too (its side is cut); a request sent whole (`length`
    body bytes) is the server's to answer, so its answer is still read and logged: what
    a client sent before it died is done by the server all the same."""
    sent = 0
    with contextlib.suppress(OSError, asyncio.CancelledError, ValueError):
        while data := await client.read(256 * 1024):
            sent += len(data)
            server.write(data)
            await server.drain()
    if length is None or sent < length:
        server.transport.abort()


async def _answer(
    server: asyncio.StreamReader, client: asyncio.StreamWriter, watch: Callable[[bytes], None]
) -> None:
    """The answer, until the server closes; then the client's side is closed once
    every byte is flushed (an abort could drop the answer's tail)."""
    with contextlib.suppress(OSError, asyncio.CancelledError, ValueError):
        while data := await server.read(256 * 1024):
            watch(data)
            client.write(data)
            await client.drain()
    client.close()
    with contextlib.suppress(OSError, asyncio.TimeoutError, asyncio.CancelledError):
        await asyncio.wait_for(client.wait_closed(), 30)
