"""Retention's sweep of what S3 holds under an upload's prefix once its upload is gone.

An upload's removal lists its prefix (multipart uploads, then objects), deletes what it
found, and deletes the info last. What is written under `<id>/` after that listing
outlives the removal, and nothing else would ever find it: every look at an upload
starts from its info. Two kinds of writers can do that:

- requests that do not hold the upload's lease write empty markers: a link
  `<part>/final.<final id>` (a final upload waits for this part: s3adapter.link) and a
  stop marker `<id>/stop.<generation>` (a newer draft request asks the holder to stop:
  s3adapter._ask_to_stop). A link checks the part's info after writing, but the info is
  still there until the removal's very last delete; a stop marker's asker deletes it
  when done, unless it is killed first or S3 fails that delete;
- a writer fenced by the removal (or a take-over before it) with one request in flight:
  a part of `data`'s multipart upload, a multipart upload it had just created, a tail
  object (s3store: a stale writer stops at its next part, so at most one such write).

So the upload sweep (runtime/retention.py) takes the uploads area's listing (the one
`expired` made, taken before this sweep's removals: what those race past is found by
the next sweep) and the area's multipart uploads, takes the upload ids that have
objects or multipart uploads but no info, checks with a read that the info is really
gone, and deletes the objects and aborts the multipart uploads. There is no age rule:
an upload's info is its first write and ids are never reused, so a creation in progress
(or anything that has an info) is never touched, and the read covers an info written
after the listing. An object beside an info is never touched: a live link, or a stop
marker whose asker may still be waiting (one left behind names a generation gone by:
it stops no later holder, and goes with its upload).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Final

from ..storage.s3cleanup import Leftover
from ..storage.s3meta import S3_ERRORS, storage_error
from .problems import NotFound
from .s3store import UploadArea
from .state import CorruptRecord, is_valid_id

log = logging.getLogger("streamproxy.retention")

MARKERS: Final = ("final.", "stop.")
"""The leaves of an upload's prefix that are markers (s3adapter writes them)."""


@dataclass
class _Unrecorded:
    """What one upload id without an info holds: markers, other leftovers."""

    markers: list[Leftover] = field(default_factory=list)
    leftovers: list[Leftover] = field(default_factory=list)


async def remove_orphans(area: UploadArea, keys: list[str] | None = None) -> dict[str, int]:
    """Delete what uploads whose info is gone left under their prefix; how many went, by
    retention's metric label: `marker` (links, stop markers) and `leftover` (parts'
    multipart uploads, tails, other objects). `keys`: the area's listing, if taken."""
    keys = await area.listing() if keys is None else keys
    recorded: set[str] = set()
    found: dict[str, _Unrecorded] = {}
    for key in keys:
        upload_id, _, leaf = key.removeprefix(area.dir).partition("/")
        if leaf == "info":
            recorded.add(upload_id)
        elif is_valid_id(upload_id):
            unrecorded = found.setdefault(upload_id, _Unrecorded())
            kind = unrecorded.markers if leaf.startswith(MARKERS) else unrecorded.leftovers
            kind.append(Leftover(key))
    try:
        async for page in area.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=area.bucket, Prefix=area.dir
        ):
            for upload in page.get("Uploads", []):
                upload_id = upload["Key"].removeprefix(area.dir).partition("/")[0]
                if is_valid_id(upload_id):
                    leftover = Leftover(upload["Key"], upload["UploadId"])
                    found.setdefault(upload_id, _Unrecorded()).leftovers.append(leftover)
    except S3_ERRORS as error:
        raise storage_error(error, "listing the uploads area's multipart uploads") from error
    removed = {"marker": 0, "leftover": 0}
    for upload_id, unrecorded in found.items():
        if upload_id in recorded or not await _gone(area, upload_id):
            continue
        for what, leftovers in (("marker", unrecorded.markers), ("leftover", unrecorded.leftovers)):
            for leftover in leftovers:
                if await _remove(area, leftover):
                    removed[what] += 1
    return removed


async def _remove(area: UploadArea, leftover: Leftover) -> bool:
    try:
        await area.storage.janitor.remove(leftover)
    except S3_ERRORS as error:  # the next sweep finds it again
        log.warning("retention: could not remove the orphaned %s: %r", leftover.key, error)
        return False
    what = "multipart upload of" if leftover.upload_id else "object"
    log.info("retention: removed the %s %s (its upload is gone)", what, leftover.key)
    return True


async def _gone(area: UploadArea, upload_id: str) -> bool:
    """Is the upload's info really absent (not only from a listing)?"""
    try:
        await area.read(upload_id)
    except NotFound:
        return True
    except CorruptRecord:
        return False  # there, unreadable: expiry's to remove (remove_unreadable)
    return False
