"""Guards on each connection before a request reaches the application: head deadline and size.

aiohttp bounds a request line and each header line (8190 bytes) and their count
(128), but not the head's total, and until a head is complete only its keep-alive
timer (an hour by default) ends a client that stalls. Here each connection gets a
small `RequestHandler` subclass that, while a head is under way:

- counts the head's bytes as they arrive and answers 431 `headers_too_large` as
  soon as they pass `--max-head-size`, before aiohttp has parsed the rest;
- gives the whole head `--header-timeout` seconds, from accept for the first
  request and from its first byte for each later one (an idle keep-alive
  connection is `--keepalive-timeout`'s, as in nginx), then answers 408 `timeout`.

Both answers are written straight to the transport (no request exists yet) with
the JSON body errors.py formats, and the connection is closed. Between a head and
the end of its body the guard stands aside: body bytes are the pump's business.

A plain body (Content-Length, not chunked, not compressed) goes past aiohttp's
parser once its head is parsed: the parser copies every body byte into a new bytes
object before queuing it, ~10% of an upload's CPU on the event loop's thread
(benchmarks/RESULTS.md, history, 2026-12-01 08:17). Its reads are queued on the
request's reader as they came, up to the declared length; the next request on the
connection gets a new parser, the old one never having seen the end of that body.

A subclass plugged in by a site of our own, rather than a patch of aiohttp's
class, so a host program that mounts the app keeps aiohttp as it is; it only
uses the transport and timer calls that uvloop's loop has as well. It reads the
attributes aiohttp keeps without a public name (`_loop`, `_request_count`,
`_messages`, `_parser`, `_read_bufsize`, `_close`, `_force_close`); an aiohttp that
renames them fails tests/test_hostile_clients.py.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from email.utils import formatdate
from typing import Any

from aiohttp import web
from aiohttp.http import HttpRequestParser
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.streams import StreamReader
from aiohttp.web_protocol import MAX_MSG_QUEUE_SIZE, RequestPayloadError

from ..error_table import BAD_REQUEST, BY_STATUS, HEADERS_TOO_LARGE, TIMEOUT, ErrorKind
from ..errors import json_error
from ..http.requestlog import new_request_id
from .directbody import BUFFER_SIZE, DirectBodies, DirectBody
from .metrics import Metrics

log = logging.getLogger("streamproxy")
_parser_skip_works = True  # False once aiohttp's parser refused the arguments below

_HEAD_END = b"\r\n\r\n"  # aiohttp's parser refuses bare-LF heads, so this is the end
_LINGER = 2.0  # seconds a refused client may go on sending before the connection closes
# A plain body at least this long is read by a `DirectBody`, into buffers of its own;
# a shorter one is not worth swapping the connection's protocol twice. At most
# DIRECT_BODIES at once per site (transfers.FEW_TRANSFERS: where one stream has the
# cores to itself), and only when the transfer count allows (`direct_allowed`).
DIRECT_BODY_MIN = 128 * 1024
DIRECT_BODIES = 2


@dataclass(frozen=True)
class HeadLimits:
    """How long a request head may take and how large it may be."""

    timeout: float
    max_size: int


def error_bytes(kind: ErrorKind, detail: str) -> bytes:
    """A whole `Connection: close` HTTP/1.1 error response, for when no request exists yet."""
    request_id = new_request_id()
    response = json_error(kind.status, kind.code, detail, request_id=request_id)
    body = response.body
    assert isinstance(body, bytes)
    head = (
        f"HTTP/1.1 {kind.status} {response.reason}\r\n"
        f"Content-Type: {response.content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Date: {formatdate(usegmt=True)}\r\n"
        f"X-Request-Id: {request_id}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


class GuardedRequestHandler(web.RequestHandler):
    """aiohttp's connection handler with a deadline and a size limit on each request head.

    The parser stays aiohttp's: it says when a head is complete (a new message
    is queued) and when its body has ended (the payload reaches EOF). Only the
    byte count looks for the blank line itself, to know how much of a read
    belongs to the head when the body follows in the same read.
    """

    def __init__(
        self,
        manager: web.Server,
        *,
        limits: HeadLimits,
        metrics: Metrics,
        direct_allowed: Callable[[], bool],
        direct_bodies: DirectBodies,
        **kwargs: Any,
    ) -> None:
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._metrics = metrics
        self._direct_allowed = direct_allowed  # asked as a large plain body starts
        self._direct_bodies = direct_bodies  # the site's count
        self._head_bytes = 0  # of the head under way
        self._head_tail = b""  # its last 3 bytes: a blank line split across reads
        self._head_deadline: asyncio.TimerHandle | None = None
        self._body: StreamReader | None = None  # the body of the last head, until its EOF
        self._messages_seen = 0
        self._responses_done = 0
        self._lingering = False  # answered and half-closed: what arrives is discarded
        self._direct_left = 0  # bytes of the body under way that go straight to self._body
        self._next_parser: HttpRequestParser | None = None  # for the request after it
        self._direct_body = False  # a DirectBody has the connection until the body's end

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._start_head_clock()  # the first head is timed from accept

    def connection_lost(self, exc: BaseException | None) -> None:
        self._stop_head_clock()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._lingering or self._direct_body:
            return  # (a DirectBody's: aiohttp's resume_reading() passes b"" here)
        if self._direct_left:
            self._feed_direct(data)
            return
        if self._body is not None and self._body.is_eof():
            self._body = None  # that request's body is complete: a new head may begin
        if self._body is not None or self.transport is None or not data:
            super().data_received(data)
            return
        window = self._head_tail + data
        end = window.find(_HEAD_END)
        arriving = len(data) if end < 0 else max(0, end + len(_HEAD_END) - len(self._head_tail))
        if self._head_bytes + arriving > self._limits.max_size:
            self._refuse_head()
            return
        if self._head_deadline is None:
            self._start_head_clock()  # a later request: timed from its first byte
        seen = self._request_count
        super().data_received(data)
        if self._request_count == seen:
            self._head_bytes += len(data)
            self._head_tail = window[-3:]
            return
        # aiohttp queued one or more messages: the head is complete.
        self._messages_seen += self._request_count - seen
        self._stop_head_clock()
        self._head_bytes = 0
        self._head_tail = b""
        if self._messages:
            message, body = self._messages[-1]
            self._body = None if body.is_eof() else body
            if self._body is not None:
                self._direct_left = _direct_length(message, self._body)
                if self._direct_left:
                    self._next_parser = self._new_parser()
                    if self._next_parser is None:
                        self._direct_left = 0
                    elif self._direct_left >= DIRECT_BODY_MIN:
                        self._read_body_directly(self._body)

    def _read_body_directly(self, body: StreamReader) -> None:
        """Hand the connection to a `DirectBody` until the body ends (direct_body_done)."""
        assert self.transport is not None
        if not self._direct_allowed() or not self._direct_bodies.try_start():
            return
        reader = DirectBody(self, body, self._direct_left, BUFFER_SIZE, self._direct_bodies)
        try:
            self.transport.set_protocol(reader)
        except NotImplementedError:  # a transport that keeps its protocol: bodies go by copy
            self._direct_bodies.end()
            return
        self._direct_left = 0
        self._direct_body = True

    def accepting_body(self) -> bool:
        """A `DirectBody` asks: False once answered and closing (its bytes are dropped)."""
        return not (self._lingering or self._force_close or self._close)

    def direct_body_done(self) -> None:
        """The `DirectBody`'s body is complete: the connection comes back to this handler,
        with a new parser for the next request (the old one never saw that body)."""
        self._body = None
        self._direct_body = False
        self._parser, self._next_parser = self._next_parser, None
        if self.transport is not None:
            self.transport.set_protocol(self)

    def _feed_direct(self, data: bytes) -> None:
        """Body bytes straight into the request's reader, not through aiohttp's parser,
        which copies every byte of a body into a new bytes object first."""
        if self._force_close or self._close or not data:
            return
        body = self._body
        assert body is not None
        rest = b""
        if len(data) > self._direct_left:  # the next request follows in the same read
            data, rest = data[: self._direct_left], data[self._direct_left :]
        self._direct_left -= len(data)
        body.feed_data(data)
        if self._direct_left:
            return
        # The body is complete: its parser never saw it, so the next request gets a new one.
        body.feed_eof()
        self._body = None
        self._parser, self._next_parser = self._next_parser, None
        if rest:
            self.data_received(rest)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """A request aiohttp's parser refused (a malformed line or header: the client's
        fault) gets one log line, not a traceback at ERROR that any client could repeat
        to flood the log, and the service's JSON error with a request id, not aiohttp's
        text page. Everything else (a 500) is aiohttp's, logged whole."""
        if (
            not isinstance(exc, HttpProcessingError)
            or not 400 <= status < 500
            or request.writer.output_size > 0
        ):
            return super().handle_error(request, status, exc, message)
        kind = BY_STATUS.get(status, BAD_REQUEST)
        lines = (exc.message or "").strip().splitlines()
        detail = f"malformed request: {lines[0].rstrip(':')}" if lines else "malformed request"
        request_id = new_request_id()
        log.info("refused from %s: %s", request.remote, detail, extra={"request_id": request_id})
        response = json_error(
            kind.status, kind.code, detail, request_id=request_id,
            headers={"X-Request-Id": request_id, "Connection": "close"},
        )  # fmt: skip
        response.force_close()
        return response

    async def finish_response(
        self, request: web.BaseRequest, resp: web.StreamResponse, start_time: float | None
    ) -> tuple[web.StreamResponse, bool]:
        try:
            return await super().finish_response(request, resp, start_time)
        finally:
            self._responses_done += 1

    def _start_head_clock(self) -> None:
        """The head's deadline starts; aiohttp's idle timer stops (the connection is not idle)."""
        self._stop_head_clock()
        self.keep_alive(True)  # cancels the idle timer; aiohttp arms it again after the response
        self._head_deadline = self._loop.call_later(self._limits.timeout, self._head_timed_out)

    def _stop_head_clock(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
            self._head_deadline = None

    def _head_timed_out(self) -> None:
        self._head_deadline = None
        if self.transport is None or self._body is not None:
            return
        self._metrics.timed_out.labels("head").inc()
        log.debug(
            "closing %s: no complete request head in %gs", self.peername, self._limits.timeout
        )
        started = bool(self._head_bytes or self._head_tail)
        self._answer_and_close(
            error_bytes(
                TIMEOUT,
                f"the request head did not arrive within {self._limits.timeout:g} seconds",
            )
            if started
            else b""
        )

    def _refuse_head(self) -> None:
        self._stop_head_clock()
        self._metrics.refusals.labels(HEADERS_TOO_LARGE.code).inc()
        log.debug("closing %s: request head over %d bytes", self.peername, self._limits.max_size)
        self._answer_and_close(
            error_bytes(
                HEADERS_TOO_LARGE,
                f"the request line and headers are larger than {self._limits.max_size} bytes",
            )
        )

    def _answer_and_close(self, answer: bytes) -> None:
        """Write `answer` (unless a response is under way: it would cut into it), then close
        gently: a client still sending its head would otherwise get a reset that can
        destroy the answer before it reads it, so the connection is half-closed and
        what arrives is discarded for a moment first (nginx's lingering close)."""
        transport = self.transport
        if transport is None or self._lingering:
            return
        if answer and self._responses_done == self._messages_seen:
            transport.write(answer)
        if not answer or not transport.can_write_eof():
            self.force_close()
            return
        self._lingering = True
        transport.write_eof()
        self._loop.call_later(_LINGER, self.force_close)

    def _new_parser(self) -> HttpRequestParser | None:
        """A parser for the request after a body that skips the old one; made before
        the skip starts, so an aiohttp whose parser takes other arguments keeps its own
        path (None: no skip) instead of failing at the end of a body; said once."""
        global _parser_skip_works
        if not _parser_skip_works:
            return None
        try:
            return HttpRequestParser(
                self,
                self._loop,
                self._read_bufsize,
                max_line_size=self.max_line_size,
                max_field_size=self.max_field_size,
                max_headers=self.max_headers,
                payload_exception=RequestPayloadError,
                max_msg_queue_size=MAX_MSG_QUEUE_SIZE,
            )
        except (TypeError, AttributeError):
            _parser_skip_works = False
            log.warning("aiohttp's request parser changed: bodies go through it", exc_info=True)
            return None


def _direct_length(message: Any, body: StreamReader) -> int:
    """How many bytes of `body` are still to come, when they may skip the parser: a plain
    Content-Length body (not chunked, not compressed, no upgrade); else 0."""
    if (
        type(body) is not StreamReader
        or message.chunked
        or message.compression is not None
        or message.upgrade
    ):
        return 0
    length = message.headers.get("Content-Length")
    if length is None or not length.isdigit():
        return 0
    return max(0, int(length) - body.total_bytes)


class GuardedSite(web.BaseSite):
    """A TCP site whose connections are `GuardedRequestHandler`s on the runner's server."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        limits: HeadLimits,
        metrics: Metrics,
        handler_options: dict[str, Any],
        reuse_port: bool | None = None,
        direct_allowed: Callable[[], bool] = lambda: True,
    ) -> None:
        super().__init__(runner)
        self._host = host
        self._port = port
        self._limits = limits
        self._metrics = metrics
        self._direct_allowed = direct_allowed
        self._direct_bodies = DirectBodies(DIRECT_BODIES)
        self._handler_options = handler_options
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._port}"

    def _make_handler(self) -> GuardedRequestHandler:
        server = self._runner.server
        assert server is not None
        return GuardedRequestHandler(
            server,
            loop=asyncio.get_running_loop(),
            limits=self._limits,
            metrics=self._metrics,
            direct_allowed=self._direct_allowed,
            direct_bodies=self._direct_bodies,
            **self._handler_options,
        )

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._make_handler,
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_port=self._reuse_port,
        )
