"""Retention: a background sweep that deletes expired files and stale staged data.

Files older than `--retention` go (only when it is set); temporaries and
unfinished multipart uploads older than `--stale-after` always go, since only a
crash or a killed process leaves them; so do upload links' claims older than the
longest a link lives (its link has expired: the claim guards nothing any more).
Every deletion is logged by the storage and counted in the metrics; so is a sweep
that fails, and the next one runs as usual.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from aiohttp import web

from ..events import EVENTS, EventBus
from ..http.uploadlinks import MAX_EXPIRES_IN
from ..resumable.complete import announced, upload_data
from ..resumable.problems import Busy, NotFound
from ..resumable.state import CorruptRecord, Status, UploadRecord
from ..resumable.store import UPLOAD_STORE, UploadStore
from ..storage.base import STORAGE, OneTimeClaims, Storage, StorageError, capability
from .metrics import METRICS, Metrics
from .settings import SETTINGS, Settings

log = logging.getLogger("streamproxy.retention")

MIN_INTERVAL = 1.0
MAX_INTERVAL = 3600.0


def sweep_interval(settings: Settings) -> float:
    """A tenth of the shortest period watched, between a second and an hour."""
    periods = [settings.stale_after]
    if settings.retention is not None:
        periods.append(settings.retention)
    return min(MAX_INTERVAL, max(MIN_INTERVAL, min(periods) / 10))


async def sweep(storage: Storage, settings: Settings, metrics: Metrics) -> None:
    """One pass: expired files (with --retention), then stale staged data."""
    now = datetime.now(UTC)
    if settings.retention is not None:
        deleted = await storage.delete_older_than(now - timedelta(seconds=settings.retention))
        if deleted:
            metrics.deleted.labels("file").inc(deleted)
            log.info("retention: %d files older than %gs deleted", deleted, settings.retention)
    stale = await storage.remove_stale_temporaries(now - timedelta(seconds=settings.stale_after))
    if stale:
        metrics.deleted.labels("staged").inc(stale)
        log.info("retention: %d stale temporaries removed", stale)
    claims = capability(storage, OneTimeClaims)
    if claims is not None:
        spent = await claims.forget_claims_before(now - timedelta(seconds=MAX_EXPIRES_IN))
        if spent:
            metrics.deleted.labels("claim").inc(spent)
            log.info("retention: %d claims of expired upload links removed", spent)


UPLOAD_SWEEP_INTERVAL = 30.0
"""Expired resumable uploads go within a minute of their expiry."""


async def sweep_uploads(
    uploads: UploadStore, metrics: Metrics, events: EventBus | None = None
) -> int:
    """Remove resumable uploads past `--upload-expiry` (or cancelled, or unreadable),
    sending `upload.expired` for each that expired unfinished (a cancelled one was the
    client's; a stored, refused or failed-final one was announced as it ended);
    then what races with removals left behind (`UploadStore.remove_orphans`: markers,
    and leftovers of the removed uploads' bytes).

    Each is removed under its lock: one a request is writing right now (it renews the
    expiry) is left for the next sweep.
    """
    removed = 0
    for upload_id in await uploads.expired(time.time()):
        try:
            async with uploads.hold(upload_id) as held:
                record = held.record
                await held.remove()
        except (Busy, NotFound):
            continue
        except CorruptRecord as error:  # nothing to announce, but it must not stay
            if await uploads.remove_unreadable(upload_id):
                log.warning(
                    "retention: removed upload %s, its record is unreadable: %s", upload_id, error
                )
                removed += 1
            continue
        removed += 1
        if events is not None and events.enabled and not _told(record):
            await events.emit("upload.expired", upload_data(record))
    if removed:
        metrics.deleted.labels("upload").inc(removed)
        log.info("retention: %d expired resumable uploads removed", removed)
    for what, count in (await uploads.remove_orphans(time.time())).items():
        if count:
            metrics.deleted.labels(what).inc(count)
            log.info("retention: %d %ss left by removed uploads deleted", count, what)
    return removed


def _told(record: UploadRecord) -> bool:
    """Does the upload's end need no `upload.expired`: cancelled by its client, or
    announced already (stored, refused, a final upload whose part went)?"""
    return record.status is Status.CANCELLED or announced(record)


async def _run_uploads(app: web.Application) -> None:
    uploads, metrics = app[UPLOAD_STORE], app[METRICS]
    if uploads is None:
        return
    interval = min(UPLOAD_SWEEP_INTERVAL, max(MIN_INTERVAL, app[SETTINGS].upload_expiry / 10))
    while True:
        try:
            await sweep_uploads(uploads, metrics, app[EVENTS])
        except Exception:
            metrics.retention_failures.inc()
            log.exception("sweep of expired uploads failed, will retry")
        await asyncio.sleep(interval)


async def _run(app: web.Application) -> None:
    settings, storage, metrics = app[SETTINGS], app[STORAGE], app[METRICS]
    interval = sweep_interval(settings)
    while True:
        try:
            await sweep(storage, settings, metrics)
        except StorageError as error:
            metrics.retention_failures.inc()
            log.warning("retention sweep failed, will retry: %s", error)
        except Exception:
            # A bug or an error the storage did not map: the sweep must not die of it.
            metrics.retention_failures.inc()
            log.exception("retention sweep failed unexpectedly, will retry")
        await asyncio.sleep(interval)


async def retention_lifecycle(app: web.Application) -> AsyncIterator[None]:
    """cleanup_ctx: the sweep runs for the application's life."""
    tasks = [
        asyncio.create_task(_run(app), name="streamproxy-retention"),
        asyncio.create_task(_run_uploads(app), name="streamproxy-upload-expiry"),
    ]
    yield
    for task in tasks:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
