"""tus concatenation: a final upload made of partial uploads, in order, created when they
are finished (`concatenation`) or while they still upload (`concatenation-unfinished`);
and what HEAD tells of one.

The creation checks every part before anything is stored: 404 for an unknown or
terminated part, 410 for an expired one, 400 for an upload that is not a partial one or
that failed, 413 when the parts' known lengths add up to more than the cap (with
`file.refused`, reason `size`, as `POST /files` sends for a body over it). Then the
final upload's record, a link beside each unfinished part, and the assembly at once if
every part is finished (assembly.py says when it runs otherwise). A part that goes away
between the check and the links makes the creation fail the same way, and the final
upload is removed: a refused creation leaves nothing behind.

HEAD on a final upload that waits for its parts (tus: "the value of Upload-Offset before
concatenation is not defined"): no `Upload-Offset`, and `Upload-Length` only once every
part's length is known (then it MUST be there: the sum); after the assembly both, equal.
A final upload that failed (a part terminated or expired first: 410) answers HEAD with
its refusal, as GET does.
"""

from __future__ import annotations

import time
from contextlib import suppress

from aiohttp import web

from ..http import uploadlinks
from ..intake.entry import max_size as intake_max_size
from ..intake.entry import preflight
from .assembly import Parts, read_parts, settle, unusable_part
from .complete import announce_too_large
from .flow import check_link, check_metadata, lifetime
from .hashstate import ResumableMD5
from .problems import BadHeader, Busy, NotFound, Refused, TooLarge
from .state import Protocol, Status, UploadRecord
from .store import UploadStore


async def _check_parts(store: UploadStore, part_ids: tuple[str, ...]) -> Parts:
    """The parts, each usable (finished or not); else the refusal that names it."""
    records: list[UploadRecord] = []
    now = time.time()
    for part_id in part_ids:
        try:
            part = await store.read(part_id)
        except NotFound as error:
            raise NotFound(f"partial upload {part_id}: no such upload (terminated?)") from error
        part.check_live(now)
        unusable = unusable_part(part, now)
        if unusable is not None:
            raise BadHeader(unusable)
        records.append(part)
    return Parts(tuple(records))


async def concatenate(
    request: web.Request, store: UploadStore, part_ids: tuple[str, ...], metadata: dict[str, str]
) -> UploadRecord:
    """Create the final upload; assemble and commit it now if its parts are finished."""
    link = await check_link(request, metadata)
    check_metadata(metadata)
    preflight(request, links=link is not None)
    parts = await _check_parts(store, part_ids)
    try:
        record = UploadRecord.create(
            protocol=Protocol.TUS,
            now=time.time(),
            lifetime=lifetime(request),
            md5_state=ResumableMD5().to_bytes(),
            max_size=intake_max_size(request),
            length=parts.length,
            metadata=metadata,
            parts=part_ids,
            upload_link=uploadlinks.token_of(request) if link is not None else None,
        )
    except TooLarge:  # known lengths over the cap: refused as POST /files refuses one
        await announce_too_large(request, metadata, parts.length or 0)
        raise
    await store.create(record)
    try:
        for part in parts.records:
            if part.status is not Status.COMPLETE:
                await store.link(part.id, record.id)
    except NotFound as error:  # removed since it was checked
        await _remove(store, record.id)
        raise NotFound(f"{error.detail}: a partial upload was removed meanwhile") from error
    settled = await settle(request, store, record, creating=True)
    if settled.status is Status.FAILED:  # a part went away, or they add up to too much
        await _remove(store, record.id)
        raise refusal(settled)
    return settled


async def _remove(store: UploadStore, upload_id: str) -> None:
    with suppress(Busy, NotFound):
        async with store.hold(upload_id) as held:
            await held.remove()


def refusal(record: UploadRecord) -> Refused:
    """A failed upload's refusal, as recorded."""
    error = record.error or {"status": 400, "code": "bad_request", "detail": "failed"}
    return Refused(int(error["status"]), str(error["code"]), str(error["detail"]))


async def final_state(
    request: web.Request, store: UploadStore, record: UploadRecord
) -> tuple[UploadRecord, int | None]:
    """A final upload for HEAD, settled first (assembled if its parts are finished, as
    assembly.py says): the record, and its length if it can be told. A failed final
    upload raises its refusal."""
    record = await settle(request, store, record)
    if record.status is Status.FAILED:
        raise refusal(record)
    length = record.length
    if length is None and record.status is Status.RECEIVING:
        length = (await read_parts(store, record.parts)).length
    return record, length
