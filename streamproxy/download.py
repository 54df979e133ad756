"""Downloads and stat: `GET|HEAD /files/download`, `GET /files/stat` and their aliases.

aiohttp's FileResponse is not used: its ETag is mtime-based and it answers
several ranges with 416. Here the ETag is the stored MD5, several ranges become
`multipart/byteranges`, and a local file's bytes still go out by sendfile.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import quote

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from . import naming, signing
from .auth import check_api_key
from .error_table import BAD_REQUEST, NOT_FOUND, PRECONDITION_FAILED, RANGE_NOT_SATISFIABLE
from .mediatypes import is_active
from .metrics import METRICS
from .preconditions import Outcome, evaluate, if_range_allows
from .ranges import ByteRange, Unsatisfiable, parse_range
from .sendfile import SendfileUnavailable, sendfile
from .settings import SETTINGS
from .storage.base import (
    STORAGE,
    FileMissing,
    InMemoryContent,
    LocalFileSource,
    StoredFile,
    StoredMeta,
)
from .transfers import TRANSFERS

log = logging.getLogger("streamproxy")

# Served on active types (HTML, SVG, XML, script): a sandboxed, opaque origin where
# no script runs, so a stored file can never act as a page of this service.
ACTIVE_CONTENT_POLICY = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'"


def requested_name(request: web.Request) -> str:
    try:
        return naming.check_stored_name(request.query.get("filename"))
    except naming.BadName as error:
        raise BAD_REQUEST(str(error)) from None


def content_disposition(meta: StoredMeta, attachment: bool) -> str:
    """`inline` (or `attachment`) with an ASCII fallback and the UTF-8 name (RFC 6266)."""
    name = meta.info.original_name or meta.name
    fallback = "".join(ch if ch.isascii() and ch.isprintable() else "_" for ch in name)
    fallback = fallback.replace("\\", "_").replace('"', "_")
    kind = "attachment" if attachment else "inline"
    return f"{kind}; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"


def _validator_headers(meta: StoredMeta) -> dict[str, str]:
    return {
        "ETag": f'"{meta.info.etag}"',
        "Last-Modified": _http_date(meta),
        "Cache-Control": "private, no-cache",
    }


def _http_date(meta: StoredMeta) -> str:
    return meta.info.created.strftime("%a, %d %b %Y %H:%M:%S GMT")


def file_headers(meta: StoredMeta, attachment: bool) -> dict[str, str]:
    headers = _validator_headers(meta)
    headers.update(
        {
            "Accept-Ranges": "bytes",
            "Content-Disposition": content_disposition(meta, attachment),
            "X-Content-Type-Options": "nosniff",
        }
    )
    if is_active(meta.info.type):
        headers["Content-Security-Policy"] = ACTIVE_CONTENT_POLICY
    return headers


@dataclass(frozen=True)
class Segment:
    """Bytes to send: an optional preamble (multipart headers), then a slice of the file."""

    preamble: bytes
    start: int
    length: int


def plan_body(
    meta: StoredMeta, ranges: Sequence[ByteRange] | None
) -> tuple[int, str, list[Segment], bytes, dict[str, str]]:
    """Status, Content-Type, segments, trailer and extra headers for a whole file or ranges."""
    size, media_type = meta.info.size, meta.info.type
    if ranges is None:
        return 200, media_type, [Segment(b"", 0, size)], b"", {}
    if len(ranges) == 1:
        only = ranges[0]
        headers = {"Content-Range": only.content_range(size)}
        return 206, media_type, [Segment(b"", only.start, only.length)], b"", headers
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
    return 206, f"multipart/byteranges; boundary={boundary}", segments, trailer, {}


async def send_segment(
    request: web.Request, writer: AbstractStreamWriter, stored: StoredFile, segment: Segment
) -> None:
    """One slice of the file: sendfile for a local file, chunks from storage otherwise."""
    if segment.preamble:
        await writer.write(segment.preamble)
    if not segment.length:
        return
    if isinstance(stored, LocalFileSource):
        timeout = request.config_dict[SETTINGS].client_timeout
        try:
            await sendfile(
                request.transport,
                stored.local_file,
                segment.start,
                segment.length,
                idle_timeout=timeout,
            )
            return
        except SendfileUnavailable:
            pass
    async for chunk in stored.chunks(segment.start, segment.length):
        await writer.write(chunk)


async def download(request: web.Request) -> web.StreamResponse:
    name = requested_name(request)
    keys = request.config_dict[SETTINGS].signing_key
    if keys:
        signing.verify(name, request.query, keys)
    storage = request.config_dict[STORAGE]
    attachment = request.query.get("download", "") in {"1", "true", "yes"}
    try:
        async with storage.open(name) as stored:
            return await _respond(request, stored, attachment)
    except FileMissing:
        raise NOT_FOUND(f"no file named {name!r}") from None


async def _respond(
    request: web.Request, stored: StoredFile, attachment: bool
) -> web.StreamResponse:
    meta = stored.meta
    size = meta.info.size
    outcome = evaluate(request, meta.info.etag, meta.info.created)
    if outcome is Outcome.NOT_MODIFIED:
        return web.Response(status=304, headers=_validator_headers(meta))
    if outcome is Outcome.FAILED:
        raise PRECONDITION_FAILED(
            "the file does not match the request's If-Match or If-Unmodified-Since",
        )
    headers = file_headers(meta, attachment)
    ranges = None
    if if_range_allows(request, meta.info.etag, meta.info.created):
        try:
            ranges = parse_range(request.headers.get("Range"), size)
        except Unsatisfiable:
            headers = {"Content-Range": f"bytes */{size}"}
            raise RANGE_NOT_SATISFIABLE(
                f"no requested range overlaps the file's {size} bytes",
                headers,
            ) from None
    status, content_type, segments, trailer, extra = plan_body(meta, ranges)
    headers.update(extra)
    headers["Content-Type"] = content_type
    if isinstance(stored, InMemoryContent):
        # Small enough to have been read whole: one response, one write.
        content = stored.content
        body = b"".join(s.preamble + content[s.start : s.start + s.length] for s in segments)
        request.config_dict[METRICS].sent.inc(sum(s.length for s in segments))
        return web.Response(status=status, headers=headers, body=body + trailer)
    response = web.StreamResponse(status=status, headers=headers)
    response.content_length = sum(len(s.preamble) + s.length for s in segments) + len(trailer)
    if request.method == "HEAD":
        return response
    with request.config_dict[TRANSFERS].slot("download"):
        sent = request.config_dict[METRICS].sent
        try:
            writer = await response.prepare(request)
            assert writer is not None
            for segment in segments:
                await send_segment(request, writer, stored, segment)
                sent.inc(segment.length)
            if trailer:
                await writer.write(trailer)
            await response.write_eof()
        except ConnectionError:
            # The client left mid-body (players and download managers do): nothing
            # to answer and nothing to log as an error. aiohttp sees the closed
            # connection and logs the request as it ended.
            log.debug("client left during %s", request.path_qs)
    return response


async def stat(request: web.Request) -> web.Response:
    check_api_key(request)
    name = requested_name(request)
    try:
        meta = await request.config_dict[STORAGE].stat(name)
    except FileMissing:
        raise NOT_FOUND(f"no file named {name!r}") from None
    return web.json_response(meta.to_public(), headers=_validator_headers(meta))
