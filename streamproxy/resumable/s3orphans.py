"""Retention's sweep of S3 markers whose upload is gone (links, stop markers).

Two kinds of empty objects under an upload's prefix are written by a request that does
not hold the upload's lease: a link `<part>/final.<final id>` (a final upload waits for
this part: s3adapter.link) and a stop marker `<id>/stop.<generation>` (a newer draft
request asks the holder to stop: s3adapter._ask_to_stop). The upload's removal lists
its prefix, deletes what it found, and deletes the info last. A marker written after
that listing outlives the removal: a link checks the part's info after writing, but the
info is still there until the removal's very last delete; a stop marker's asker deletes
it when done, unless it is killed first or S3 fails that delete. Nothing else would
ever find such a marker: every look at an upload starts from its info.

So the upload sweep (runtime/retention.py) lists the uploads area, takes the prefixes
that hold markers but no info, checks with a read that the info is really gone (a
listing is no snapshot: the info may have been written since) and deletes their
markers. A marker beside an info is never touched: a live link, or a stop marker whose
asker may still be waiting (one left behind names a generation gone by: it stops no
later holder, and goes with its upload). Other objects without an info (a part or tail
a fenced request wrote past a removal) are not markers and are left to the removal's
own design (s3store: everything under `<id>/` is created only while the info exists).
"""

from __future__ import annotations

import logging
from typing import Final

from ..storage.s3cleanup import Leftover
from ..storage.s3meta import S3_ERRORS, storage_error
from .problems import NotFound
from .s3store import UploadArea
from .state import CorruptRecord, is_valid_id

log = logging.getLogger("streamproxy.retention")

MARKERS: Final = ("final.", "stop.")
"""The leaves of an upload's prefix that are markers (s3adapter writes them)."""


async def remove_orphans(area: UploadArea) -> int:
    """Delete the markers of uploads whose info is gone; how many went."""
    candidates: dict[str, list[str]] = {}
    recorded: set[str] = set()
    try:
        async for page in area.client.get_paginator("list_objects_v2").paginate(
            Bucket=area.bucket, Prefix=area.dir
        ):
            for item in page.get("Contents", []):
                upload_id, _, leaf = item["Key"].removeprefix(area.dir).partition("/")
                if leaf == "info":
                    recorded.add(upload_id)
                elif leaf.startswith(MARKERS) and is_valid_id(upload_id):
                    candidates.setdefault(upload_id, []).append(item["Key"])
    except S3_ERRORS as error:
        raise storage_error(error, "listing the uploads area for orphaned markers") from error
    removed = 0
    for upload_id, keys in candidates.items():
        if upload_id in recorded or not await _gone(area, upload_id):
            continue
        for key in keys:
            try:
                await area.storage.janitor.remove(Leftover(key))
            except S3_ERRORS as error:  # the next sweep finds it again
                log.warning("retention: could not delete the orphaned marker %s: %r", key, error)
                continue
            removed += 1
            log.info("retention: removed %s (its upload is gone)", key)
    return removed


async def _gone(area: UploadArea, upload_id: str) -> bool:
    """Is the upload's info really absent (not only from a listing)?"""
    try:
        await area.read(upload_id)
    except NotFound:
        return True
    except CorruptRecord:
        return False  # there, unreadable: expiry's to remove (remove_unreadable)
    return False
