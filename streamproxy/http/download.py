"""Downloads and stat: `GET|HEAD /files/download`, `GET /files/stat` and their aliases.

As in aiohttp's `FileResponse.prepare()`, one object owns a download: given the
open stored file it decides the outcome (preconditions, then If-Range and Range)
as one `Outcome`, builds the headers and sends the body. aiohttp's FileResponse
itself is not used: its ETag is mtime-based and it answers several ranges with
416. Here the ETag is the stored MD5, several ranges become
`multipart/byteranges`, and a local file's bytes still go out by sendfile.
"""

from __future__ import annotations

import enum
import functools
import logging
import secrets
from collections.abc import Sequence
from typing import IO, NamedTuple
from urllib.parse import quote

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.helpers import ChainMapProxy

from ..error_table import NOT_FOUND, PRECONDITION_FAILED, RANGE_NOT_SATISFIABLE
from ..intake import naming
from ..intake.mediatypes import is_active
from ..intake.transfers import TRANSFERS
from ..runtime.metrics import METRICS
from ..runtime.settings import SETTINGS
from ..storage.base import (
    STORAGE,
    FileMissing,
    InMemoryContent,
    LocalFileSource,
    StoredFile,
    StoredMeta,
)
from . import signing
from .auth import check_api_key
from .preconditions import (
    etag_header,
    http_date,
    if_range_allows,
    not_modified,
    precondition_fails,
)
from .ranges import ByteRange, Unsatisfiable, parse_range
from .sendfile import SendfileUnavailable, sendfile

log = logging.getLogger("streamproxy")

# Served on active types (HTML, SVG, XML, script): a sandboxed, opaque origin where
# no script runs, so a stored file can never act as a page of this service.
ACTIVE_CONTENT_POLICY = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"


class Outcome(enum.Enum):
    """What a download request gets, decided before a byte is sent."""

    FULL = (200, "the whole file")
    PARTIAL = (206, "one range")
    MULTIPART = (206, "several ranges, as multipart/byteranges")
    NOT_MODIFIED = (304, "If-None-Match or If-Modified-Since: the client's copy is current")
    PRECONDITION_FAILED = (412, "If-Match or If-Unmodified-Since does not hold")
    UNSATISFIABLE = (416, "no requested range overlaps the file")

    def __init__(self, status: int, meaning: str) -> None:
        self.status = status
        self.meaning = meaning


def requested_name(request: web.Request) -> str:
    """The stored name asked for; a bad one is the one error mapping's 400."""
    return _checked_name(request.query.get("filename"))


# Downloads repeat names (every agent opens the media of a conversation): a name that
# passed once is not checked and normalised again. A refused one raises, uncached.
_checked_name = functools.lru_cache(maxsize=4096)(naming.check_stored_name)


def content_disposition(meta: StoredMeta, attachment: bool) -> str:
    """`inline` (or `attachment`) with an ASCII fallback and the UTF-8 name (RFC 6266)."""
    name = meta.info.original_name or meta.name
    fallback = "".join(ch if ch.isascii() and ch.isprintable() else "_" for ch in name)
    fallback = fallback.replace("\\", "_").replace('"', "_")
    kind = "attachment" if attachment else "inline"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def validator_headers(meta: StoredMeta) -> dict[str, str]:
    """ETag and Last-Modified, on every answer about a file (200, 206, 304, stat)."""
    return {
        "ETag": etag_header(meta.info.etag),
        "Last-Modified": http_date(meta.info.created),
        "Cache-Control": "private, no-cache",
    }


@functools.lru_cache(maxsize=1024)
def file_header_items(meta: StoredMeta, attachment: bool) -> tuple[tuple[str, str], ...]:
    """The headers a 200 or 206 of this file always carries, made once per file and
    disposition (the HTTP date, the quoted name): a function of the metadata alone."""
    headers = validator_headers(meta)
    headers["Accept-Ranges"] = "bytes"
    headers["Content-Disposition"] = content_disposition(meta, attachment)
    headers["X-Content-Type-Options"] = "nosniff"
    if is_active(meta.info.type):
        headers["Content-Security-Policy"] = ACTIVE_CONTENT_POLICY
    return tuple(headers.items())


class Segment(NamedTuple):
    """Bytes to send: an optional preamble (multipart headers), then a slice of the file."""

    preamble: bytes
    start: int
    length: int


class Body(NamedTuple):
    """What a 200 or 206 sends: its Content-Type, the slices in order, a closing trailer."""

    content_type: str
    segments: list[Segment]
    trailer: bytes = b""

    @property
    def length(self) -> int:
        """Content-Length: every preamble, slice and the trailer."""
        return sum(len(s.preamble) + s.length for s in self.segments) + len(self.trailer)

    @property
    def file_bytes(self) -> int:
        """The file's own bytes in it: what `streamproxy_sent_bytes_total` counts."""
        return sum(s.length for s in self.segments)


def multipart_body(media_type: str, size: int, ranges: Sequence[ByteRange]) -> Body:
    """Several ranges as `multipart/byteranges` (RFC 9110 section 14.6)."""
    boundary = secrets.token_hex(16)
    segments = []
    for index, byte_range in enumerate(ranges):
        part_header = (
            f"--{boundary}\r\nContent-Type: {media_type}\r\n"
            f"Content-Range: {byte_range.content_range(size)}\r\n\r\n"
        )
        separator = "\r\n" if index else ""
        preamble = (separator + part_header).encode("latin-1")
        segments.append(Segment(preamble, byte_range.start, byte_range.length))
    trailer = f"\r\n--{boundary}--\r\n".encode("latin-1")
    return Body(f"multipart/byteranges; boundary={boundary}", segments, trailer)


class FileDownload:
    """One download of an open stored file: decide the outcome, then answer it."""

    __slots__ = ("attachment", "config", "meta", "request", "stored")

    def __init__(
        self, request: web.Request, stored: StoredFile, attachment: bool, config: ChainMapProxy
    ) -> None:
        self.request = request
        self.config = config  # request.config_dict, made once
        self.stored = stored
        self.meta = stored.meta
        self.attachment = attachment

    def decide(self) -> tuple[Outcome, list[ByteRange]]:
        """Preconditions first (412, then 304), then If-Range and Range (206, 416, or 200)."""
        request, info = self.request, self.meta.info
        etag, created = info.etag, info.created
        if precondition_fails(request.if_match, request.if_unmodified_since, etag, created):
            return Outcome.PRECONDITION_FAILED, []
        if not_modified(request.if_none_match, request.if_modified_since, etag, created):
            return Outcome.NOT_MODIFIED, []
        if not if_range_allows(request.headers.get("If-Range"), etag, created):
            return Outcome.FULL, []
        try:
            ranges = parse_range(request.headers.get("Range"), info.size)
        except Unsatisfiable:
            return Outcome.UNSATISFIABLE, []
        if ranges is None:
            return Outcome.FULL, []
        return (Outcome.PARTIAL if len(ranges) == 1 else Outcome.MULTIPART), ranges

    async def respond(self) -> web.StreamResponse:
        outcome, ranges = self.decide()
        meta = self.meta
        size = meta.info.size
        if outcome is Outcome.NOT_MODIFIED:
            return web.Response(status=outcome.status, headers=validator_headers(meta))
        if outcome is Outcome.PRECONDITION_FAILED:
            raise PRECONDITION_FAILED(
                "the file does not match the request's If-Match or If-Unmodified-Since"
            )
        if outcome is Outcome.UNSATISFIABLE:
            raise RANGE_NOT_SATISFIABLE(
                f"no requested range overlaps the file's {size} bytes",
                {"Content-Range": f"bytes */{size}"},
            )
        headers = self.file_headers()
        media_type = meta.info.type
        if outcome is Outcome.FULL:
            body = Body(media_type, [Segment(b"", 0, size)])
        elif outcome is Outcome.PARTIAL:
            only = ranges[0]
            headers["Content-Range"] = only.content_range(size)
            body = Body(media_type, [Segment(b"", only.start, only.length)])
        else:
            body = multipart_body(media_type, size, ranges)
        headers["Content-Type"] = body.content_type
        if self.request.method == "HEAD":  # headers only: nothing sent, nothing counted
            response = web.StreamResponse(status=outcome.status, headers=headers)
            response.content_length = body.length
            return response
        content, local_file = self.shortcuts()
        if content is not None:
            # Small enough to have been read whole: one response, one write.
            data = content if outcome is Outcome.FULL else self.assemble(content, body)
            self.config[METRICS].sent.inc(body.file_bytes)
            return web.Response(status=outcome.status, headers=headers, body=data)
        response = web.StreamResponse(status=outcome.status, headers=headers)
        response.content_length = body.length
        if local_file is not None and not body.segments[0].preamble:
            # aiohttp holds the head back; it goes with the body (see `send_segment`).
            response._send_headers_immediately = False
        await self.stream(response, body, local_file)
        return response

    def file_headers(self) -> dict[str, str]:
        return dict(file_header_items(self.meta, self.attachment))

    def shortcuts(self) -> tuple[bytes | None, IO[bytes] | None]:
        """The storage's optional shortcuts, read here and nowhere else: the whole content
        of a small file, and an open local file to sendfile from."""
        stored = self.stored
        content = stored.content if isinstance(stored, InMemoryContent) else None
        local_file = stored.local_file if isinstance(stored, LocalFileSource) else None
        return content, local_file

    @staticmethod
    def assemble(content: bytes, body: Body) -> bytes:
        parts = [s.preamble + content[s.start : s.start + s.length] for s in body.segments]
        return b"".join(parts) + body.trailer

    async def stream(
        self, response: web.StreamResponse, body: Body, local_file: IO[bytes] | None
    ) -> None:
        """Send the body slice by slice, counting file bytes as each slice goes out."""
        request, config = self.request, self.config
        with config[TRANSFERS].slot("download"):
            sent = config[METRICS].sent
            try:
                writer = await response.prepare(request)
                assert writer is not None
                for segment in body.segments:
                    await self.send_segment(writer, segment, local_file)
                    sent.inc(segment.length)
                if body.trailer:
                    await writer.write(body.trailer)
                await response.write_eof()
            except ConnectionError:
                # The client left mid-body (players and download managers do): nothing
                # to answer and nothing to log as an error. aiohttp sees the closed
                # connection and logs the request as it ended.
                log.debug("client left during %s", request.path_qs)

    async def send_segment(
        self, writer: AbstractStreamWriter, segment: Segment, local_file: IO[bytes] | None
    ) -> None:
        """One slice of the file: sendfile for a local file, chunks from storage otherwise."""
        if segment.preamble:
            await writer.write(segment.preamble)
        if not segment.length:
            return
        if local_file is not None:
            timeout = self.config[SETTINGS].client_timeout
            head = take_held_head(writer)
            try:
                await sendfile(
                    self.request.transport,
                    local_file,
                    segment.start,
                    segment.length,
                    idle_timeout=timeout,
                    head=head,
                )
                return
            except SendfileUnavailable:
                if head:  # (counted once already, when taken)
                    writer.output_size -= len(head)
                    await writer.write(head)
        async for chunk in self.stored.chunks(segment.start, segment.length):
            await writer.write(chunk)


def take_held_head(writer: AbstractStreamWriter) -> bytes:
    """The response head aiohttp holds back until the first body write, taken to go out
    with the sendfile (one segment with the body's start); b"" if it went already."""
    held = getattr(writer, "_headers_buf", None)
    if not isinstance(held, bytes) or getattr(writer, "_headers_written", True):
        writer.send_headers()
        return b""
    writer._headers_buf = None  # type: ignore[attr-defined]
    writer._headers_written = True  # type: ignore[attr-defined]
    writer.output_size += len(held)  # a response has begun
    return held


async def download(request: web.Request) -> web.StreamResponse:
    name = requested_name(request)
    config = request.config_dict
    keys = config[SETTINGS].signing_key
    if keys:
        signing.verify(name, request.query, keys)
    attachment = request.query.get("download", "") in {"1", "true", "yes"}
    try:
        async with config[STORAGE].open(name) as stored:
            return await FileDownload(request, stored, attachment, config).respond()
    except FileMissing:
        raise NOT_FOUND(f"no file named {name!r}") from None


async def stat(request: web.Request) -> web.Response:
    check_api_key(request)
    name = requested_name(request)
    try:
        meta = await request.config_dict[STORAGE].stat(name)
    except FileMissing:
        raise NOT_FOUND(f"no file named {name!r}") from None
    return web.json_response(meta.to_public(), headers=validator_headers(meta))
