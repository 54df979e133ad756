"""tus 1.0.0 onto the upload state machine: creation (with upload, deferred length),
HEAD, PATCH (checksum), expiration, concatenation and concatenation-unfinished
(concat.py, assembly.py: a PATCH that finishes a part may assemble a final upload
waiting for it). Termination and OPTIONS are in routes.py.
"""

from __future__ import annotations

import time

from aiohttp import web

from ..error_table import TYPE_NOT_ALLOWED
from . import flow
from .assembly import after_part_finished
from .concat import concatenate
from .headers import (
    TUS_PATCH_TYPE,
    format_concat,
    format_expires,
    format_metadata,
    parse_checksum,
    parse_concat,
    parse_defer_length,
    parse_metadata,
    parse_uint,
    part_id,
)
from .problems import BadHeader, ResumableError
from .state import Protocol, Status, UploadRecord
from .store import UploadStore


class UnsupportedMediaType(ResumableError):
    """tus: a PATCH must be `application/offset+octet-stream` (415)."""

    kind = TYPE_NOT_ALLOWED


def _has_body(request: web.Request) -> bool:
    return request.body_exists and request.content_length != 0


def _check_patch_type(request: web.Request) -> None:
    if request.content_type != TUS_PATCH_TYPE:
        raise UnsupportedMediaType(f"a tus PATCH's Content-Type must be {TUS_PATCH_TYPE}")


def _offset_headers(record: UploadRecord) -> dict[str, str]:
    headers = {"Upload-Offset": str(record.offset)}
    if record.status is Status.RECEIVING:
        headers["Upload-Expires"] = format_expires(record.expires)
    if record.result is not None:
        headers["ETag"] = f'"{record.result["info"]["etag"]}"'
    return headers


async def create(request: web.Request, store: UploadStore) -> web.Response:
    concat = parse_concat(request.headers.get("Upload-Concat"))
    metadata = parse_metadata(request.headers.get("Upload-Metadata"))
    if concat is not None and not concat.partial:
        return await _create_final(request, store, concat.urls, metadata)
    deferred = parse_defer_length(request.headers.get("Upload-Defer-Length"))
    raw_length = request.headers.get("Upload-Length")
    if deferred == (raw_length is not None):
        raise BadHeader("send exactly one of Upload-Length and Upload-Defer-Length: 1")
    length = parse_uint(raw_length, "Upload-Length") if raw_length is not None else None
    checksum = parse_checksum(request.headers.get("Upload-Checksum"))
    with_upload = _has_body(request)
    if with_upload:
        _check_patch_type(request)
    partial = concat is not None
    record = await flow.create(
        request, store, Protocol.TUS, length=length, metadata=metadata, partial=partial
    )
    url = flow.location(request, record.id)
    if with_upload or record.length == 0:
        async with store.hold(record.id) as held:  # the record as held: lease and all
            record = await flow.append(request, held, held.record, checksum=checksum)
    return web.Response(status=201, headers={"Location": url, **_offset_headers(record)})


async def _create_final(
    request: web.Request, store: UploadStore, urls: tuple[str, ...], metadata: dict[str, str]
) -> web.Response:
    if request.headers.get("Upload-Length") is not None:
        raise BadHeader("a final upload takes no Upload-Length: its parts make its length")
    uploads_path = request.app.router["resumable-create"].url_for().path
    part_ids = tuple(part_id(url, uploads_path) for url in urls)
    record = await concatenate(request, store, part_ids, metadata)
    headers = {"Location": flow.location(request, record.id), **_offset_headers(record)}
    if record.status is Status.RECEIVING:  # waits for its parts: no offset yet (concat.py)
        del headers["Upload-Offset"]
    return web.Response(status=201, headers=headers)


def head_response(
    request: web.Request, record: UploadRecord, *, final_length: int | None = None
) -> web.Response:
    """`final_length`: a final upload's length as its parts tell it (concat.final_state)."""
    headers = {"Upload-Offset": str(record.offset), "Cache-Control": "no-store"}
    length = record.length
    if record.partial:
        headers["Upload-Concat"] = format_concat(True)
    elif record.is_final:
        urls = tuple(flow.location(request, part) for part in record.parts)
        headers["Upload-Concat"] = format_concat(False, urls)
        if record.status is Status.RECEIVING:  # not assembled: no offset (concat.py)
            del headers["Upload-Offset"]
            length = final_length if length is None else length
    if length is not None:
        headers["Upload-Length"] = str(length)
    elif not record.is_final:
        headers["Upload-Defer-Length"] = "1"
    if record.metadata:
        headers["Upload-Metadata"] = format_metadata(record.metadata)
    if record.status is Status.RECEIVING:
        headers["Upload-Expires"] = format_expires(record.expires)
    return web.Response(status=200, headers=headers)


async def patch(request: web.Request, store: UploadStore) -> web.Response:
    _check_patch_type(request)
    raw_offset = request.headers.get("Upload-Offset")
    if raw_offset is None:
        raise BadHeader("a PATCH needs Upload-Offset")
    offset = parse_uint(raw_offset, "Upload-Offset")
    raw_length = request.headers.get("Upload-Length")
    length = parse_uint(raw_length, "Upload-Length") if raw_length is not None else None
    checksum = parse_checksum(request.headers.get("Upload-Checksum"))
    async with store.hold(request.match_info["upload_id"]) as held:
        record = held.record
        record.check_live(time.time())
        max_size = flow.cap(request, record)
        at_end = offset == record.offset and not _has_body(request)
        if at_end and record.status is Status.COMPLETE and not record.partial:
            record = await flow.retry_completion(request, held)
        elif not (at_end and record.status is Status.COMMITTED):  # else: replay
            record = await flow.check_append(
                request, held, offset, max_size=max_size, length=length
            )
            record = await flow.append(request, held, record, checksum=checksum)
    await after_part_finished(request, store, record)  # the part is let go of by now
    return web.Response(status=204, headers=_offset_headers(record))


def final_response(request: web.Request, record: UploadRecord) -> web.Response:
    return flow.final_response(request, record)
