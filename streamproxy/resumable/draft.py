"""The IETF draft (interop 6 = draft -05, interop 8 = drafts -09 to -11) onto the upload
state machine: creation with `Upload-Complete` and its `104 Upload Resumption Supported`,
offset retrieval (HEAD), appending (PATCH), cancellation (DELETE, in routes.py).

The 104 is written straight on the transport once the upload exists durably and before
the body is read (aiohttp has no API for 1xx; its own `100 Continue` is sent the same
way, and comes first when the client asked for it). A client that loses the connection
mid-creation can then resume from the Location it already has.
"""

from __future__ import annotations

import time

from aiohttp import HttpVersion11, web

from ..http.uploadlinks import TOKEN_PARAM
from ..intake.entry import max_size
from . import flow
from .assembly import after_part_finished
from .headers import (
    DRAFT_PATCH_TYPE,
    format_bool,
    format_upload_limit,
    interop_version_value,
    parse_metadata,
    parse_sf_integer,
    parse_upload_complete,
)
from .problems import BadHeader, LengthMismatch
from .state import Protocol, Status, UploadRecord
from .store import HeldUpload, UploadStore
from .tus import UnsupportedMediaType


def _complete_flag(request: web.Request) -> bool:
    complete = parse_upload_complete(request.headers.get("Upload-Complete"))
    if complete is None:
        raise BadHeader("Upload-Complete must be ?0 or ?1")
    return complete


def _declared_length(
    request: web.Request, protocol: Protocol, offset: int, complete: bool
) -> int | None:
    """`Upload-Length` (interop 8), and the length a completing request implies; they
    must agree (inconsistent-upload-length otherwise)."""
    length = None
    if protocol is Protocol.DRAFT_8:
        length = parse_sf_integer(request.headers.get("Upload-Length"))
    if complete and request.content_length is not None:
        implied = offset + request.content_length
        if length is not None and length != implied:
            raise LengthMismatch(f"Upload-Length {length}, but the request ends at {implied}")
        length = implied
    return length


def _metadata(request: web.Request) -> dict[str, str]:
    """`Upload-Metadata` (tus-style, as tus-js-client sends it), then the query (wins)."""
    metadata = parse_metadata(request.headers.get("Upload-Metadata"))
    metadata.update(request.query)
    metadata.pop(TOKEN_PARAM, None)  # an upload link's token is no metadata: never kept
    declared = request.headers.get("Content-Type")
    if declared and request.content_type not in _NOT_A_FILE_TYPE:
        metadata.setdefault("filetype", declared)
    return metadata


_NOT_A_FILE_TYPE = frozenset(
    {
        DRAFT_PATCH_TYPE,
        "application/octet-stream",  # says nothing: the first bytes and the name decide
        "application/x-www-form-urlencoded",  # what curl --data-binary sends by default
    }
)
"""A creation's Content-Type that is not the file's type."""


async def _send_104(request: web.Request, protocol: Protocol, url: str) -> None:
    if request.version < HttpVersion11:
        return
    limit = format_upload_limit(max_size(request))  # an upload link's cap, if smaller
    head = (
        "HTTP/1.1 104 Upload Resumption Supported\r\n"
        f"Location: {url}\r\n"
        f"Upload-Draft-Interop-Version: {interop_version_value(protocol)}\r\n"
        f"Upload-Limit: {limit}\r\n\r\n"
    )
    await request.writer.write(head.encode("latin-1"))
    request.writer.output_size = 0  # an interim response is not the response


def _answer(
    request: web.Request, protocol: Protocol, record: UploadRecord, status: int
) -> web.Response:
    """200 with the `POST /files` JSON once committed, else `status` with the offset."""
    headers = {
        "Upload-Offset": str(record.offset),
        "Upload-Draft-Interop-Version": interop_version_value(protocol) or "",
    }
    if record.result is not None:
        response = flow.final_response(request, record)
        response.headers.update(headers)
        response.headers["Upload-Complete"] = format_bool(True)
        return response
    headers["Upload-Complete"] = format_bool(record.status is not Status.RECEIVING)
    headers["Upload-Limit"] = format_upload_limit(max_size(request))
    return web.Response(status=status, headers=headers)


async def _append(
    request: web.Request, held: HeldUpload, record: UploadRecord, complete: bool
) -> UploadRecord:
    """Bytes past the upload's known length (413) fail the upload for good, unlike tus:
    the draft has the resource reject the request ("MUST prevent the offset from
    exceeding the upload length ... and reject the request"), a client "SHOULD NOT
    attempt to retry or resume the upload" after a 4xx, and the length may never
    change. So that 413 replays on every later request, and it is the upload's end:
    `file.refused` with reason `size` is sent then, once (flow.append), and retention's
    removal sends no `upload.expired` for it. Bytes over the cap (no length known) and
    a length declared over it fail the upload so in both protocols."""
    return await flow.append(request, held, record, finish=complete, past_length_fails=True)


async def create(request: web.Request, protocol: Protocol, store: UploadStore) -> web.Response:
    complete = _complete_flag(request)
    length = _declared_length(request, protocol, 0, complete)
    record = await flow.create(request, store, protocol, length=length, metadata=_metadata(request))
    url = flow.location(request, record.id)
    await _send_104(request, protocol, url)
    async with store.hold(record.id) as held:  # the record as held: lease and all
        record = await _append(request, held, held.record, complete)
    response = _answer(request, protocol, record, 201)
    response.headers["Location"] = url
    return response


def head_response(request: web.Request, protocol: Protocol, record: UploadRecord) -> web.Response:
    headers = {
        "Upload-Offset": str(record.offset),
        "Upload-Complete": format_bool(record.status is not Status.RECEIVING),
        "Upload-Limit": format_upload_limit(flow.cap(request, record)),
        "Upload-Draft-Interop-Version": interop_version_value(protocol) or "",
        "Cache-Control": "no-store",
    }
    if protocol is Protocol.DRAFT_8 and record.length is not None:
        headers["Upload-Length"] = str(record.length)
    return web.Response(status=204, headers=headers)


async def patch(request: web.Request, protocol: Protocol, store: UploadStore) -> web.Response:
    if protocol is Protocol.DRAFT_8 and request.content_type != DRAFT_PATCH_TYPE:
        raise UnsupportedMediaType(f"an append's Content-Type must be {DRAFT_PATCH_TYPE}")
    offset = parse_sf_integer(request.headers.get("Upload-Offset"))
    if offset is None:
        raise BadHeader("an append needs Upload-Offset")
    complete = _complete_flag(request)
    length = _declared_length(request, protocol, offset, complete)
    has_body = request.body_exists and request.content_length != 0
    # The draft's rule: an older append still running on this upload is stopped first.
    async with store.hold(request.match_info["upload_id"], take_over=True) as held:
        record = held.record
        record.check_live(time.time())
        cap = flow.cap(request, record)
        at_end = offset == record.offset and not has_body and complete
        if at_end and record.status is Status.COMPLETE:
            record = await flow.retry_completion(request, held)
        elif not (at_end and record.status is Status.COMMITTED):  # else: replay
            record = await flow.check_append(request, held, offset, max_size=cap, length=length)
            record = await _append(request, held, record, complete)
    await after_part_finished(request, store, record)  # a tus partial upload, finished
    return _answer(request, protocol, record, 204)
