"""tus concatenation: a final upload made of finished partial uploads, in order.

The parts' bytes are read once, in order, into the final upload's data, hashing as
they go: MD5 does not compose, so the whole file's digest needs them read (with the
clamd scan at completion, the only re-reads of stored bytes). Each part is held under
its lock while it is read, so it cannot be removed or written meanwhile. Then the final
upload completes and commits like any other.

`concatenation-unfinished` is not implemented: every part must be complete when the
final upload is created (400 otherwise), which is what tus-js-client's
`parallelUploads` does.
"""

from __future__ import annotations

import time

from aiohttp import web

from ..http import uploadlinks
from ..intake.entry import max_size as intake_max_size
from ..intake.entry import preflight, transfer
from .complete import complete
from .flow import check_link, check_metadata, lifetime
from .hashstate import ResumableMD5
from .problems import BadHeader
from .state import HEAD_SIZE, Protocol, Status, UploadRecord
from .store import UploadStore


async def _check_parts(store: UploadStore, part_ids: tuple[str, ...]) -> int:
    """The parts' total length; 400 for a part that is not a finished partial upload."""
    total = 0
    now = time.time()
    for part_id in part_ids:
        part = await store.read(part_id)
        part.check_live(now)
        if not part.partial:
            raise BadHeader(f"upload {part_id} is not a partial upload (Upload-Concat: partial)")
        if part.status is not Status.COMPLETE:
            raise BadHeader(
                f"upload {part_id} is not finished ({part.offset} of "
                f"{part.length if part.length is not None else 'unknown'} bytes); "
                "concatenation-unfinished is not supported"
            )
        total += part.offset
    return total


async def concatenate(
    request: web.Request, store: UploadStore, part_ids: tuple[str, ...], metadata: dict[str, str]
) -> UploadRecord:
    """Create the final upload, copy its parts into it, and commit it."""
    link = await check_link(request, metadata)
    check_metadata(metadata)
    preflight(request, links=link is not None)
    max_size = intake_max_size(request)
    total = await _check_parts(store, part_ids)
    record = UploadRecord.create(
        protocol=Protocol.TUS,
        now=time.time(),
        lifetime=lifetime(request),
        md5_state=ResumableMD5().to_bytes(),
        max_size=max_size,
        length=total,
        metadata=metadata,
        parts=part_ids,
        upload_link=uploadlinks.token_of(request) if link is not None else None,
    )
    await store.create(record)
    md5 = ResumableMD5()
    head = bytearray()
    with transfer(request, "upload"):
        async with store.hold(record.id) as held:
            async with held.appender(md5.update) as writer:
                for part_id in part_ids:
                    async with store.hold(part_id) as part:
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
            return await complete(request, held, record)
