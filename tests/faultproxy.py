"""A TCP proxy in front of an S3 server that can fail the way object storage fails.

`cut()` is an outage: live connections are reset and new ones dropped at once.
`reject(status, code)` makes every request get that S3 error, as a bucket over
quota would answer. `fail(match, fault, ...)` fails only chosen requests (the
Nth CompleteMultipartUpload, every UploadPartCopy, ...) or delays them, so a
test can break or slow one step of a commit and let the rest through; `Hold` keeps
a request until the test lets it go, so a test can run another request in between
(a race, made deterministic). `restore()` passes traffic
through again and forgets every rule.

The proxy reads the head of each request to match it, then pipes. It asks
the server to close the connection after its answer (`Connection: close`, as
moto's server does anyway; RGW would keep it open), so one client connection
carries one request: matching the first head of a connection sees every
request.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

ALWAYS = 0  # `times` for a rule that fails every matching request from the Nth on


@dataclass(frozen=True)
class Request:
    """What a rule can see of a request: its method, query keys and header names."""

    method: str
    query: frozenset[str]
    headers: dict[str, str]
    path: str = ""

    @classmethod
    def parse(cls, head: bytes) -> Request:
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, _ = request_line.split(" ", 2)
        query = parse_qs(urlsplit(target).query, keep_blank_values=True)
        headers = {}
        for line in lines:
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        return cls(method.upper(), frozenset(query), headers, unquote(urlsplit(target).path))


@dataclass(frozen=True)
class Match:
    """Requests of this method (None: any) whose query has all `query` keys
    (`uploadId`, `partNumber`, `uploads`) and none of `no_query`, with every
    header in `headers` and none in `without` (names, any case), and whose path
    (bucket and key, unquoted) ends with `path_end` and contains `path_has`."""

    method: str | None = None
    query: tuple[str, ...] = ()
    no_query: tuple[str, ...] = ()
    headers: tuple[str, ...] = ()
    without: tuple[str, ...] = ()
    path_end: str = ""
    path_has: str = ""

    def __call__(self, request: Request) -> bool:
        return (
            self.method in {None, request.method}
            and request.path.endswith(self.path_end)
            and self.path_has in request.path
            and all(key in request.query for key in self.query)
            and not any(key in request.query for key in self.no_query)
            and all(name.lower() in request.headers for name in self.headers)
            and not any(name.lower() in request.headers for name in self.without)
        )


@dataclass(frozen=True)
class Answer:
    """Answer in S3's place with this status and S3 XML error; the request never reaches S3."""

    status: int
    code: str

    def response(self, head_only: bool) -> bytes:
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{self.code}</Code><Message>{self.code} (fault proxy)</Message>"
            "<RequestId>faultproxy</RequestId></Error>"
        )
        head = (
            f"HTTP/1.1 {self.status} Fault\r\nContent-Type: application/xml\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        return (head if head_only else head + body).encode()


@dataclass(frozen=True)
class Cut:
    """Reset the client's connection: before the request reaches S3, or after S3
    carried it out (`after=True`: the write happened, only the answer is lost)."""

    after: bool = False


@dataclass(frozen=True)
class Delay:
    """Hold the request this many seconds before it goes on to S3: a slow server."""

    seconds: float


@dataclass(frozen=True)
class Hold:
    """Hold the request until the test lets it go: `reached` is set when it arrives,
    it goes on to S3 once `release` is set."""

    reached: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


Fault = Answer | Cut | Delay | Hold


@dataclass
class Rule:
    """Fail matching requests number `nth` to `nth + times - 1` (or on, for ALWAYS)."""

    match: Match
    fault: Fault
    nth: int = 1
    times: int = 1
    seen: int = 0  # matching requests so far
    hits: int = 0  # of those, the ones this rule failed

    def fires(self, request: Request) -> bool:
        if not self.match(request):
            return False
        self.seen += 1
        first = self.nth
        if self.seen < first or (self.times != ALWAYS and self.seen >= first + self.times):
            return False
        self.hits += 1
        return True


@dataclass
class FaultProxy:
    """Between streamproxy and an S3 server on `target_port`; see the module docstring."""

    target_port: int
    rules: list[Rule] = field(default_factory=list)
    _down: bool = False
    _live: set[asyncio.StreamWriter] = field(default_factory=set)
    _server: asyncio.Server | None = None

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
        self._down = True
        for writer in list(self._live):
            writer.transport.abort()
        self._live.clear()

    def restore(self) -> None:
        self._down = False
        self.rules.clear()

    def reject(self, status: int, code: str) -> None:
        self.fail(Match(), Answer(status, code), times=ALWAYS)

    def fail(self, match: Match, fault: Fault, nth: int = 1, times: int = 1) -> Rule:
        """Add a rule; the first rule that fires for a request decides its fault.
        Every rule counts every request it matches, fired or not."""
        rule = Rule(match, fault, nth, times)
        self.rules.append(rule)
        return rule

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            head = b""
        if self._down or not head:
            writer.transport.abort()
            return
        request = Request.parse(head)
        fault = _match_all(self.rules, request)
        if isinstance(fault, Answer):
            await _answer(reader, writer, request, fault)
            return
        if isinstance(fault, Cut) and not fault.after:
            writer.transport.abort()
            return
        if isinstance(fault, Delay):
            await asyncio.sleep(fault.seconds)
        if isinstance(fault, Hold):
            fault.reached.set()
            await fault.release.wait()
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        up_writer.write(_closing(head))
        self._live |= {writer, up_writer}
        # After S3 has answered, the answer goes nowhere: S3 did the work, the client never knows.
        answer_to = _Sink(writer) if isinstance(fault, Cut) else writer
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, answer_to))
        finally:
            for side in (writer, up_writer):
                self._live.discard(side)
                side.transport.abort()


def _closing(head: bytes) -> bytes:
    """The request head with `Connection: close` (not signed by SigV4: free to change)."""
    lines = [
        line for line in head[:-4].split(b"\r\n") if not line.lower().startswith(b"connection:")
    ]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n"


def _match_all(rules: Iterable[Rule], request: Request) -> Fault | None:
    """Every rule counts the request; the first that fires decides."""
    fired = [rule.fault for rule in list(rules) if rule.fires(request)]
    return fired[0] if fired else None


async def _answer(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: Request, answer: Answer
) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        if "expect" not in request.headers:  # else the body never comes: answer at once
            await reader.readexactly(int(request.headers.get("content-length", "0")))
        writer.write(answer.response(head_only=request.method == "HEAD"))
        await writer.drain()
    writer.close()


class _Sink:
    """Passes interim answers (`100 Continue`, which the client waits for before it
    sends the body) and drops the final one; once S3 is done, the client's
    connection is reset."""

    def __init__(self, client: asyncio.StreamWriter) -> None:
        self.transport = client.transport
        self._client = client
        self._pending = b""
        self._final = False

    def write(self, data: bytes) -> None:
        if self._final:
            return
        self._pending += data
        while b"\r\n\r\n" in self._pending:
            head, _, self._pending = self._pending.partition(b"\r\n\r\n")
            if not head.split(b" ", 2)[1].startswith(b"1"):
                self._final = True
                return
            self._client.write(head + b"\r\n\r\n")

    async def drain(self) -> None:
        await self._client.drain()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter | _Sink) -> None:
    with contextlib.suppress(OSError, asyncio.CancelledError):
        while data := await reader.read(256 * 1024):
            writer.write(data)
            await writer.drain()
    writer.transport.abort()
