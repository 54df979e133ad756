"""Completion: a resumable upload whose bytes are all in becomes a stored file.

The same decisions as `POST /files`, from what the upload kept: the type from the
metadata's `filetype`, the first bytes' sniff (kept in the record since the first
PATCH) and the name; the type rules; the clamd scan, which reads the stored bytes once
(clamd takes one stream, and the PATCHes came as many); the ETag from the MD5 state
carried across requests (never re-read for the hash); the name `{conversationId}_{name}`
published by `StorageWriter.commit(names, info)`, never replacing a file.

A completion refused for the file itself (415, 422) is final: the record keeps the
refusal and replays it. Both ends send their event as `POST /files` does
(`file.stored`, or `file.refused` with reason `type` or `virus`), once: retention's
removal of the upload later sends no `upload.expired` for it (`announced`). So does an
upload refused for its size (`file.refused`, reason `size`): a creation declaring a
length over the cap (flow.py: nothing is created), an upload that takes a length or
bytes over the cap, or (the draft) bytes past its length, which fails it for good
(`refuse_too_large`), a final upload whose parts add up to more than the cap
(assembly.py, concat.py). One that failed
for a passing reason (clamd or storage away, 503) leaves the upload COMPLETE: the
client's next request at the end offset retries.
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import replace
from typing import Any

from aiohttp import web

from ..error_table import (
    EXPIRED,
    INFECTED,
    SCANNER_UNAVAILABLE,
    TOO_LARGE,
    TYPE_NOT_ALLOWED,
    ApiError,
)
from ..events import EVENTS, file_data
from ..http import uploadlinks
from ..intake.entry import download_url
from ..intake.mediatypes import TypePolicy, parse_type_rule
from ..intake.naming import base_name, candidates
from ..intake.scan import SCANNER, ScanFailed, ScannerUnavailable
from ..intake.sniff import choose_type, sniff_bytes
from ..runtime.settings import SETTINGS
from ..storage.base import STORAGE, FileInfo, StoredMeta, now_utc
from .appending import file_name, file_type
from .hashstate import ResumableMD5
from .problems import TooLarge
from .state import Status, UploadRecord
from .store import HeldUpload

log = logging.getLogger("streamproxy")

FINAL_REFUSALS = frozenset({415, 422})
_REFUSAL_REASONS = {415: "type", 422: "virus"}  # file.refused's data.reason


def stored_meta(record: UploadRecord) -> StoredMeta | None:
    """The stored file of a committed upload (what GET and a replay answer with)."""
    if record.result is None:
        return None
    info = FileInfo.from_json(json.dumps(record.result["info"]).encode())
    return StoredMeta(str(record.result["name"]), info)


def _result(meta: StoredMeta) -> dict[str, Any]:
    info: dict[str, Any] = json.loads(meta.info.to_json())
    return {"name": meta.name, "info": info}


async def complete(request: web.Request, held: HeldUpload, record: UploadRecord) -> UploadRecord:
    """Finish `record` and commit it (a partial upload for concatenation only finishes)."""
    if record.status is Status.RECEIVING:
        record = record.finish()
        await held.save(record)
    if record.partial or record.status is not Status.COMPLETE:
        return record
    try:
        meta = await _commit(request, held, record)
    except ApiError as error:
        if error.status in FINAL_REFUSALS:
            await held.save(record.failed(error.status, error.code, error.detail))
            await announce(request, "file.refused", _refused_data(record, error.status))
        raise
    committed = record.committed(_result(meta))
    await held.save(committed)
    url = download_url(request, request.config_dict[SETTINGS], meta)
    await announce(request, "file.stored", file_data(meta, url))
    return committed


def upload_data(record: UploadRecord) -> dict[str, Any]:
    """An unfinished upload as event data (file.refused, upload.expired): what the
    client said of the file, and the bytes that had arrived."""
    return metadata_data(record.metadata, record.offset)


def metadata_data(metadata: dict[str, str], size: int | None) -> dict[str, Any]:
    """Event data from what the client said of the file, and a size."""
    return {
        "name": file_name(metadata) or None,
        "type": file_type(metadata),
        "size": size,
        "conversationId": metadata.get("conversationId"),
        "channel": metadata.get("channel"),
    }


async def announce_too_large(request: web.Request, metadata: dict[str, str], size: int) -> None:
    """`file.refused` with reason `size`, as `POST /files` sends for a body over the cap:
    a creation declaring a length over it (nothing is created), an upload refused for
    good by `refuse_too_large`, a final upload whose parts add up to more (their sum)."""
    await announce(request, "file.refused", {**metadata_data(metadata, size), "reason": "size"})


async def refuse_too_large(request: web.Request, held: HeldUpload, error: TooLarge) -> None:
    """The upload can never be stored, for its size: FAILED with 413 `too_large` for
    good (later requests replay it) and `file.refused` with reason `size` sent now, once;
    retention's removal of it sends nothing more (`announced`). `size`: the bytes it
    would hold (a declared length, or its offset plus what the request sent)."""
    record = held.record
    await held.save(record.failed(TOO_LARGE.status, TOO_LARGE.code, error.detail))
    size = error.size if error.size is not None else record.offset
    await announce_too_large(request, record.metadata, size)


def _refused_data(record: UploadRecord, status: int) -> dict[str, Any]:
    return {**upload_data(record), "reason": _REFUSAL_REASONS[status]}


def announced(record: UploadRecord) -> bool:
    """Was the upload's end sent as an event already: `file.stored` (COMMITTED),
    `file.refused` (a refused completion, 415 or 422; any upload failed with 413: over
    the cap, a draft upload's bytes past its length, a final upload whose parts add up
    to more than the cap), or `upload.expired` (a final upload whose part went, 410:
    assembly.py)? Retention's removal of such an upload sends nothing more."""
    if record.status is Status.COMMITTED:
        return True
    if record.status is not Status.FAILED or record.error is None:
        return False
    status = int(record.error["status"])
    if status in FINAL_REFUSALS or status == TOO_LARGE.status:
        return True
    return record.is_final and status == EXPIRED.status


async def announce(request: web.Request, event_type: str, data: dict[str, Any]) -> None:
    """Spool the event before answering; shielded, as the outcome is already kept."""
    bus = request.config_dict[EVENTS]
    if bus.enabled:
        await asyncio.shield(bus.emit(event_type, data))


async def _commit(request: web.Request, held: HeldUpload, record: UploadRecord) -> StoredMeta:
    settings = request.config_dict[SETTINGS]
    link = uploadlinks.attach(request, record.upload_link)
    metadata = record.metadata
    filename = file_name(metadata)
    policy = TypePolicy(settings.allow_type, settings.deny_type)
    if link is not None:  # as intake.open_pump: the link's types on top, its name wins
        policy = replace(policy, also_allow=tuple(map(parse_type_rule, link.allow_type)))
        filename = link.file_name or filename
    sniffed = sniff_bytes(record.head)
    media_type = choose_type(file_type(metadata), sniffed, filename)
    refusal = policy.refusal(filename, media_type, sniffed)
    if refusal:
        raise TYPE_NOT_ALLOWED(refusal)
    await _scan(request, held, filename)
    conversation_id = metadata.get("conversationId")
    info = FileInfo(
        type=media_type,
        size=record.offset,
        etag=ResumableMD5.from_bytes(record.md5_state).hexdigest(),
        created=now_utc(),
        conversation_id=conversation_id,
        channel=metadata.get("channel"),
        original_name=filename or None,
    )
    names = candidates(base_name(conversation_id, filename, media_type))
    if link is None:
        return await held.staged().commit(names, info)
    # The link is used up here, after every check on the file and before it is
    # published (uploadlinks says why); a commit that fails gives it back.
    storage = request.config_dict[STORAGE]
    await uploadlinks.consume(storage, link, conversation_id)
    try:
        return await held.staged().commit(names, info)
    except BaseException:
        await uploadlinks.release(storage, link)
        raise


async def _scan(request: web.Request, held: HeldUpload, filename: str) -> None:
    """The stored bytes through clamd, once; the same fail-open rule as the pump's."""
    scanner = request.config_dict[SCANNER]
    if scanner is None:
        return
    try:
        stream = await scanner.open()
    except ScannerUnavailable as error:
        if not scanner.fail_open:
            raise SCANNER_UNAVAILABLE(f"the virus scanner is unavailable: {error}") from error
        log.warning("storing %r unscanned: %s", filename, error)
        return
    try:
        async for chunk in held.stored_bytes():
            await stream.feed(chunk)
        signature = await stream.verdict()
    except ScanFailed as error:
        raise SCANNER_UNAVAILABLE(
            f"the virus scanner is unavailable: {error}; the file was not stored"
        ) from error
    finally:
        stream.close()
    if signature is not None:
        log.warning("refused %r: clamd found %s", filename, signature)
        raise INFECTED(f"the file contains malware: {signature}")
