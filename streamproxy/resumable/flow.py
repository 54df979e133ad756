"""What both protocols do the same way: create, append-then-complete, the final answer.

tus.py and draft.py translate headers and statuses; the steps are here, so an upload
created with one protocol behaves the same under the other.
"""

from __future__ import annotations

import time

from aiohttp import web

from ..error_table import BAD_REQUEST, FORBIDDEN, ApiError
from ..http import uploadlinks
from ..http.linktokens import UploadLink
from ..intake.entry import max_size, preflight, transfer, upload_response
from ..intake.naming import BadName, check_conversation_id
from ..runtime.settings import SETTINGS
from .appending import append_body, file_name
from .complete import (
    FINAL_REFUSALS,
    announce_too_large,
    complete,
    refuse_too_large,
    stored_meta,
)
from .hashstate import ResumableMD5
from .headers import Checksum
from .problems import NotFound, Refused, TooLarge
from .state import Protocol, Status, UploadRecord
from .store import HeldUpload, UploadStore


def lifetime(request: web.Request) -> float:
    return float(request.config_dict[SETTINGS].upload_expiry)


def location(request: web.Request, upload_id: str) -> str:
    """The upload's absolute URL (from --public-url, else the request's origin)."""
    settings = request.config_dict[SETTINGS]
    relative = request.app.router["resumable"].url_for(upload_id=upload_id)
    base = settings.public_url or request.url.origin()
    return str(base).rstrip("/") + str(relative)


def check_metadata(metadata: dict[str, str]) -> None:
    """400 at creation for what would only fail at completion: no conversationId, bad name."""
    try:
        if "conversationId" not in metadata:
            raise BAD_REQUEST("conversationId is required in the upload's metadata")
        check_conversation_id(metadata["conversationId"])
        file_name(metadata)
    except BadName as error:
        raise BAD_REQUEST(str(error)) from error


async def create(
    request: web.Request,
    store: UploadStore,
    protocol: Protocol,
    *,
    length: int | None,
    metadata: dict[str, str],
    partial: bool = False,
) -> UploadRecord:
    """A new upload, durable (its Location may be sent as soon as this returns).

    A partial upload (tus concatenation) needs no metadata: the final one names the file.
    A creation through an upload link (admitted by the routes) keeps the link's token.
    """
    link = await check_link(request, metadata, partial=partial)
    if not partial:
        check_metadata(metadata)
    try:
        record = UploadRecord.create(
            protocol=protocol,
            now=time.time(),
            lifetime=lifetime(request),
            md5_state=ResumableMD5().to_bytes(),
            max_size=max_size(request),
            length=length,
            metadata=metadata,
            partial=partial,
            upload_link=uploadlinks.token_of(request) if link is not None else None,
        )
    except TooLarge as error:  # a length over the cap: refused as POST /files refuses one
        await announce_too_large(request, metadata, error.size or 0)
        raise
    await store.create(record)
    return record


async def check_link(
    request: web.Request, metadata: dict[str, str], *, partial: bool = False
) -> UploadLink | None:
    """At a creation through an upload link: 403 when the link is spent already or the
    metadata names another conversation (a missing conversationId is the link's)."""
    link = uploadlinks.link_of(request)
    if link is None:
        return None
    await uploadlinks.refuse_used_link(request)
    if not partial:
        conversation_id = metadata.setdefault("conversationId", link.conversation_id)
        if conversation_id != link.conversation_id:
            raise FORBIDDEN("the upload link is for another conversationId")
    return link


def cap(request: web.Request, record: UploadRecord) -> int:
    """This upload's size cap: the service's, or its upload link's (whose terms are put
    on the request here, for the pump and the completion)."""
    uploadlinks.attach(request, record.upload_link)
    return max_size(request)


async def check_append(
    request: web.Request, held: HeldUpload, offset: int, *, max_size: int, length: int | None
) -> UploadRecord:
    """Whether an append at `offset` (declaring `length`) may go ahead on the held
    upload: `UploadRecord.check_append`. A length declared over the cap (tus
    `Upload-Length` after `Upload-Defer-Length`; the draft's, or one `Upload-Complete:
    ?1` implies) fails the upload for good, announced once: the file cannot be stored."""
    try:
        return held.record.check_append(offset, time.time(), max_size=max_size, length=length)
    except TooLarge as error:
        await refuse_too_large(request, held, error)
        raise


async def append(
    request: web.Request,
    held: HeldUpload,
    record: UploadRecord,
    *,
    checksum: Checksum | None = None,
    finish: bool = False,
    past_length_fails: bool = False,
) -> UploadRecord:
    """The body after `record` (checked by the caller), then completion when the
    upload is whole: tus when the offset reaches the length, the draft when asked.

    413: bytes over the cap while the length is not known fail the upload for good
    (the file is bigger than the cap: `refuse_too_large`, `file.refused` once). Bytes
    past a known length fail it so only with `past_length_fails` (the draft: the
    resource is then invalid; draft.py); tus keeps the upload as it was, and the
    client may send the right bytes again (no event: the upload is still alive)."""
    cap(request, record)
    # An upload made through a link needs no API key (the routes let its requests in).
    preflight(request, links=record.upload_link is not None)
    with transfer(request, "upload"):
        if record != held.record:  # a length declared with this request
            await held.save(record)
        try:
            record = await append_body(
                request, held, record, checksum=checksum, lifetime=lifetime(request)
            )
        except TooLarge as error:
            if held.record.length is None or past_length_fails:
                await refuse_too_large(request, held, error)
            raise
        except ApiError as error:
            if error.status in FINAL_REFUSALS:  # the type rules, from the first bytes
                await held.save(held.record.failed(error.status, error.code, error.detail))
            raise
        if finish or record.reached_length:
            record = await complete(request, held, record)
    return record


async def retry_completion(request: web.Request, held: HeldUpload) -> UploadRecord:
    """A request at the end of an upload whose commit failed for a passing reason."""
    return await complete(request, held, held.record)


def final_response(request: web.Request, record: UploadRecord) -> web.Response:
    """The JSON `POST /files` answers, for a committed upload; its refusal if refused."""
    meta = stored_meta(record)
    if meta is not None:
        return upload_response(request, meta)
    if record.status is Status.FAILED and record.error is not None:
        error = record.error
        raise Refused(int(error["status"]), str(error["code"]), str(error["detail"]))
    record.check_live(time.time())
    raise NotFound("the upload is not complete yet; HEAD it for its offset")
