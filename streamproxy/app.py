"""`create_app(settings)`: the whole service as one aiohttp application.

A host program can mount it with `add_subapp` or run it beside its own app; the
`streamproxy` command runs it on its own. Storage is opened on start-up and
closed on clean-up through the application's lifecycle.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from .events import EVENTS, EventBus, events_lifecycle
from .events.spools import open_spool
from .fetch.client import FETCH_CLIENT, FetchClient, fetch_client_lifecycle
from .fetch.handler import from_url
from .http import download, erasure, health, listing, upload
from .http.cors import install_cors
from .http.limits import limits
from .http.openapi import openapi_json
from .http.rawupload import raw_upload
from .http.stack import install_stack
from .http.uploadlinks import create_link
from .intake.scan import SCANNER, Scanner
from .intake.transfers import TRANSFERS, TransferSlots
from .page import add_page_routes
from .resumable.routes import add_resumable_routes
from .runtime.metrics import METRICS, Metrics, metrics_handler
from .runtime.retention import retention_lifecycle
from .runtime.settings import SETTINGS, Settings
from .storage import open_storage
from .storage.base import STORAGE, Storage
from .storage.timed import TimedStorage


def add_routes(app: web.Application, base_path: str) -> None:
    """API.md's routes and Hybrid Chat's aliases, all under the base path."""
    router = app.router
    for path, name in (("/files", "upload"), ("/api/uploadFileStream", "upload-hc")):
        router.add_post(
            base_path + path, upload.upload, name=name, expect_handler=upload.expect_handler
        )
        if name == "upload":  # the raw-body upload shares the route (and its errors' shape)
            router.add_put(
                base_path + path, raw_upload, name=name, expect_handler=upload.expect_handler
            )
    router.add_post(base_path + "/files/upload-links", create_link, name="upload-links")
    router.add_get(base_path + "/files", listing.list_files, name="list", allow_head=False)
    router.add_delete(base_path + "/files", erasure.delete_files, name="delete")
    # Not "from-url": aiohttp refuses route names with a Python keyword as a part.
    router.add_post(base_path + "/files/from-url", from_url, name="url-upload")
    for path, name in (
        ("/files/download", "download"),
        ("/api/downloadFileStream", "download-hc"),
    ):
        router.add_get(base_path + path, download.download, name=name)
    for path, name in (("/files/stat", "stat"), ("/api/getFileStat", "stat-hc")):
        router.add_get(base_path + path, download.stat, name=name, allow_head=False)
    router.add_get(base_path + "/files/limits", limits, name="limits", allow_head=False)
    router.add_get(base_path + "/openapi.json", openapi_json, name="openapi", allow_head=False)
    router.add_get(base_path + "/healthz", health.healthz, name="healthz")
    router.add_get(base_path + "/metrics", metrics_handler, name="metrics", allow_head=False)
    router.add_get(base_path + "/readyz", health.readyz, name="readyz", allow_head=False)


def create_app(
    settings: Settings | None = None,
    storage: Storage | None = None,
    *,
    retention_sweep: bool = True,
) -> web.Application:
    """Build the service; `storage` defaults to the one `settings.storage` names.

    `retention_sweep=False` leaves the retention sweep to another process (the
    first worker under `--workers`).
    """
    settings = settings or Settings()
    app = web.Application()
    metrics = Metrics()
    app[SETTINGS] = settings
    app[METRICS] = metrics
    app[STORAGE] = TimedStorage(storage or open_storage(settings), metrics)
    app[TRANSFERS] = TransferSlots(settings.max_transfers, metrics.in_flight)
    app[SCANNER] = (
        Scanner(settings.clamd, fail_open=settings.clamd_fail_open, timeout=settings.clamd_timeout)
        if settings.clamd is not None
        else None
    )
    app[FETCH_CLIENT] = FetchClient(settings)
    app[EVENTS] = EventBus(
        settings.webhook,
        settings.webhook_secret,
        open_spool(app[STORAGE], fsync=settings.fsync),
        registry=metrics.registry,
    )
    app.cleanup_ctx.append(_storage_lifecycle)  # first: what follows lives in the storage
    app.cleanup_ctx.append(events_lifecycle)
    add_routes(app, settings.base_path)
    add_resumable_routes(app, settings.base_path)
    if settings.ui:
        add_page_routes(app.router, settings.base_path)
    # One middleware and one prepare hook: request id, metrics, errors, framing, CORS.
    install_stack(app, metrics, install_cors(app, settings.cors_origin))
    app.cleanup_ctx.append(fetch_client_lifecycle)
    if retention_sweep:
        app.cleanup_ctx.append(retention_lifecycle)
    return app


async def _storage_lifecycle(app: web.Application) -> AsyncIterator[None]:
    storage = app[STORAGE]
    await storage.start()
    yield
    await storage.close()
