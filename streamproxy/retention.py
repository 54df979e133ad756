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
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

from aiohttp import web

from .metrics import METRICS, Metrics
from .settings import SETTINGS, Settings
from .storage.base import STORAGE, OneTimeClaims, Storage, StorageError, capability
from .uploadlinks import MAX_EXPIRES_IN

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
    task = asyncio.create_task(_run(app), name="streamproxy-retention")
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
