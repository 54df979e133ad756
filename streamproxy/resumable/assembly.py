"""A final upload's assembly (tus concatenation): what it does, when, by whom, and how
it fails.

What: the parts' bytes are read once, in order, into the final upload's data, hashing
as they go (MD5 does not compose: with the clamd scan at completion, the only re-reads
of stored bytes). Each part is held under its lock while it is read, so it can be
neither removed nor written meanwhile. Then the final upload completes and commits like
any other (complete.py: naming from the final's metadata, type rules, the sniff of its
first bytes, the scan, `file.stored` or `file.refused`).

When (`concatenation-unfinished`): a final upload may be created while its parts still
upload. Its creation (concat.py) notes a link beside each unfinished part
(`UploadStore.link`: an object of its own, not the part's record, so a PATCH in flight
on the part neither blocks the creation nor is blocked by it), and only then looks at
the parts again. The assembly runs inline, in whichever request first sees every part
finished, on any worker or instance (the state is all in the records and links):

- the creation itself, when the parts are finished already (or finish meanwhile);
- the PATCH that finishes a part: once it has let go of the part, it reads the part's
  links and settles each final upload (`after_part_finished`). That PATCH answers for
  its part (204) whatever becomes of the final upload, whose outcome is in its record;
- a HEAD or GET on the final upload (`settle`), lazily: after a crash between a part's
  completion and the assembly, or an assembly that failed for a passing reason (no
  transfer slot, a part busy for too long, storage or scanner away), or a commit to
  retry.

A part is saved finished before its links are read, and the creation links before it
reads the parts, so at least one of the two sees the other; the final upload's lock and
its status make the assembly happen once.

How it fails: a part that is terminated (DELETE), expires, fails, or cannot be read
before the final upload is assembled makes the final upload FAILED with 410 `expired`
(the detail names the part), from the first request that sees it (a PATCH finishing
another part, a HEAD or GET on the final upload); HEAD and GET on it answer 410 from
then on, and retention removes it at its own expiry. That request also sends the event
`upload.expired` for the final upload (as retention does for an upload that expired
unfinished: it will never be stored), once, as it saves the failure, and retention's
removal sends none again; a creation that fails so sends none (its 410 is the answer,
and it leaves nothing behind). DELETE on a part is not refused for a final upload
waiting for it, and such a part still takes PATCHes. Parts of
deferred length that add up to more than the cap fail the final upload with 413 and
send `file.refused` with reason `size` (as `POST /files` does for a body over the cap),
once, also when the creation finds it (known lengths: concat.py). Once
assembled, the final upload no longer needs its parts. A final upload waiting for its
parts expires `--upload-expiry` after its creation, its last write, as any upload does.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from ..error_table import EXPIRED, TOO_LARGE
from ..intake.entry import transfer
from ..runtime.settings import SETTINGS
from .complete import announce, announce_too_large, complete, upload_data
from .flow import cap, lifetime
from .hashstate import ResumableMD5
from .problems import BadHeader, Busy, Expired, NotFound, ResumableError
from .state import HEAD_SIZE, CorruptRecord, Status, UploadRecord
from .store import HeldUpload, UploadStore

log = logging.getLogger("streamproxy")

_PART_BUSY_WAITS: Final = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0)
"""Seconds to wait for a finished part held by someone else (the PATCH that finished it
letting go, or another final upload's assembly reading it) before giving up for now."""


@dataclass(frozen=True)
class Parts:
    """A final upload's parts as read now: their records, or why one cannot be used."""

    records: tuple[UploadRecord, ...]
    unusable: str | None = None

    @property
    def finished(self) -> bool:
        return self.unusable is None and all(p.status is Status.COMPLETE for p in self.records)

    @property
    def length(self) -> int | None:
        """The final upload's length, once every part's is known."""
        if self.unusable is not None:
            return None
        total = 0
        for part in self.records:
            if part.length is None:
                return None
            total += part.length
        return total


def unusable_part(part: UploadRecord, now: float) -> str | None:
    """Why a partial upload cannot go into a final upload, or None."""
    try:
        part.check_live(now)
    except (NotFound, Expired) as error:
        return f"partial upload {part.id}: {error.detail}"
    if not part.partial:
        return f"upload {part.id} is not a partial upload (Upload-Concat: partial)"
    if part.status is Status.FAILED:
        detail = (part.error or {}).get("detail", "refused")
        return f"partial upload {part.id} failed: {detail}"
    if part.status not in (Status.RECEIVING, Status.COMPLETE):
        return f"partial upload {part.id} is {part.status}"
    return None


async def read_parts(store: UploadStore, part_ids: Sequence[str]) -> Parts:
    records: list[UploadRecord] = []
    now = time.time()
    for part_id in part_ids:
        try:
            part = await store.read(part_id)
        except NotFound:
            return Parts(tuple(records), f"partial upload {part_id} was terminated or never was")
        except CorruptRecord:
            return Parts(tuple(records), f"partial upload {part_id} cannot be read")
        unusable = unusable_part(part, now)
        if unusable is not None:
            return Parts(tuple(records), unusable)
        records.append(part)
    return Parts(tuple(records))


async def settle(
    request: web.Request, store: UploadStore, record: UploadRecord, *, creating: bool = False
) -> UploadRecord:
    """A final upload as it stands once assembled (every part finished), failed (a part
    gone) or left waiting; its commit retried if one failed for a passing reason.
    `creating`: the request that creates it, which answers a failure itself (no event).

    Raises what an assembly or commit raises (415, 422, 503, ...); a final upload another
    request holds right now is answered as it was read.
    """
    if not record.is_final or record.status not in (Status.RECEIVING, Status.COMPLETE):
        return record
    if time.time() >= record.expires:
        return record  # the routes answer 410; retention removes it
    if record.status is Status.RECEIVING:
        parts = await read_parts(store, record.parts)
        if parts.unusable is None and not parts.finished:
            return record
    try:
        async with store.hold(record.id) as held:
            return await _settle_held(request, store, held, creating)
    except Busy:
        return record


async def _settle_held(
    request: web.Request, store: UploadStore, held: HeldUpload, creating: bool
) -> UploadRecord:
    record = held.record
    if record.status is Status.COMPLETE:
        return await complete(request, held, record)  # the commit, again
    if record.status is not Status.RECEIVING:
        return record
    parts = await read_parts(store, record.parts)  # again, under the final upload's lock
    if parts.unusable is not None:
        return await _part_gone(request, held, parts.unusable, creating)
    if not parts.finished:
        return record
    total = sum(part.offset for part in parts.records)
    limit = cap(request, record) if record.upload_link else request.config_dict[SETTINGS].max_size
    if total > limit:
        detail = f"the parts add up to {total} bytes, over the limit of {limit} bytes"
        failed = await _fail(held, TOO_LARGE.status, TOO_LARGE.code, detail)
        await announce_too_large(request, failed.metadata, total)  # the creation's too
        return failed
    try:
        record = await _copy_parts(request, store, held, record, total)
    except _PartGone as gone:
        return await _part_gone(request, held, str(gone), creating)
    return await complete(request, held, record)


async def _part_gone(
    request: web.Request, held: HeldUpload, why: str, creating: bool
) -> UploadRecord:
    """FAILED with 410 `expired`, and announced as an upload that will never be stored."""
    detail = f"{why}; the final upload cannot be assembled: upload its parts again"
    failed = await _fail(held, EXPIRED.status, EXPIRED.code, detail)
    if not creating:
        await announce(request, "upload.expired", upload_data(failed))
    return failed


async def _fail(held: HeldUpload, status: int, code: str, detail: str) -> UploadRecord:
    failed = held.record.failed(status, code, detail)
    await held.save(failed)
    log.info("final upload %s failed: %s", failed.id, detail)
    return failed


class _PartGone(Exception):
    """A part went away (or changed) between the look at it and its reading."""


async def _copy_parts(
    request: web.Request, store: UploadStore, held: HeldUpload, record: UploadRecord, total: int
) -> UploadRecord:
    """The parts' bytes into the final upload's data, acknowledged: the record to complete."""
    md5 = ResumableMD5()
    head = bytearray()
    with transfer(request, "upload"):
        async with held.appender(md5.update) as writer:
            for part_id in record.parts:
                async with AsyncExitStack() as stack:
                    part = await _hold_part(stack, store, part_id)
                    unusable = unusable_part(part.record, time.time())
                    if unusable is not None or part.record.status is not Status.COMPLETE:
                        raise _PartGone(unusable or f"partial upload {part_id} changed")
                    async for chunk in part.stored_bytes():
                        if len(head) < HEAD_SIZE:
                            head += chunk[: HEAD_SIZE - len(head)]
                        await writer.write([chunk])
            if writer.written != total:
                raise BadHeader("a part changed while it was being concatenated")
            record = record.appended(
                total, bytes(head), md5.to_bytes(), now=time.time(), lifetime=lifetime(request)
            )
            await writer.acknowledge(record)
    return record


async def _hold_part(stack: AsyncExitStack, store: UploadStore, part_id: str) -> HeldUpload:
    """The finished part under its lock, waiting a little for a holder to let go."""
    try:
        for wait in _PART_BUSY_WAITS:
            try:
                return await stack.enter_async_context(store.hold(part_id))
            except Busy:
                await asyncio.sleep(wait)
        return await stack.enter_async_context(store.hold(part_id))
    except (NotFound, CorruptRecord) as error:
        raise _PartGone(f"partial upload {part_id} was terminated") from error


async def after_part_finished(request: web.Request, store: UploadStore, part: UploadRecord) -> None:
    """After a request finished partial upload `part` and let go of it: settle each
    final upload waiting for it. Never raises: the request answers for the part; each
    final upload's outcome is in its record (and a passing failure is retried lazily)."""
    if not part.partial or part.status is not Status.COMPLETE:
        return
    try:
        finals = await store.linked(part.id)
    except Exception as error:  # the part's answer stands; HEAD on the final retries
        log.warning("could not list the final uploads of part %s: %r", part.id, error)
        return
    for final_id in finals:
        try:
            await settle(request, store, await store.read(final_id))
        except (NotFound, CorruptRecord):
            continue  # the final upload was terminated or is being removed
        except ResumableError as error:
            log.info("final upload %s not assembled now: %s", final_id, error.detail)
        except Exception as error:  # a refusal is in its record; the rest is retried
            log.info("final upload %s not assembled now: %r", final_id, error)
