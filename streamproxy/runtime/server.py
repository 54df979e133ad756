"""Running the service: listen, say where, serve until SIGINT or SIGTERM, shut down cleanly."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from .. import __version__
from ..app import create_app
from ..http.requestlog import AccessLogger
from ..intake.transfers import TRANSFERS, TransferSlots
from ..storage.base import STORAGE
from .collector import pace_collector
from .connections import GuardedSite, HeadLimits
from .heap import fix_heap_thresholds
from .metrics import METRICS
from .settings import SETTINGS, Settings

log = logging.getLogger("streamproxy")

# aiohttp's read buffer per connection: the request body waits here while the
# previous chunk is written; aiohttp pauses reading at twice this. 64 KiB took less
# CPU than 128 or 256 KiB and holds an upload's memory ~1.4 MiB at 256 in flight.
READ_BUFFER = 64 * 1024


def _format_address(address: object) -> str:
    if isinstance(address, tuple):
        host, port = address[0], address[1]
        return f"http://[{host}]:{port}" if ":" in str(host) else f"http://{host}:{port}"
    return str(address)


def guarded_site(
    runner: web.AppRunner,
    host: str,
    port: int,
    *,
    handler_options: dict[str, Any],
    reuse_port: bool | None = None,
) -> GuardedSite:
    """The site the app listens on, its connection guards set from the app's settings,
    metrics and transfer count (the tests' in-process servers listen through it too)."""
    app = runner.app
    settings = app[SETTINGS]
    return GuardedSite(
        runner,
        host,
        port,
        limits=HeadLimits(settings.header_timeout, settings.max_head_size),
        metrics=app[METRICS],
        handler_options=handler_options,
        reuse_port=reuse_port,
        direct_allowed=app[TRANSFERS].few_others_in_flight,
    )


async def serve(
    settings: Settings,
    ready: Callable[[list[str]], None] | None = None,
    worker: int | None = None,
) -> None:
    """Serve until a signal arrives; `ready` gets the bound URLs once listening.

    `worker` is the index of a worker process under `--workers`: only the first
    one sweeps for retention.
    """
    fix_heap_thresholds()
    app = create_app(settings, retention_sweep=worker in (None, 0))
    handler_options: dict[str, Any] = {
        "access_log_class": AccessLogger,
        "access_log": logging.getLogger("streamproxy.access"),
        "read_bufsize": READ_BUFFER,
        "keepalive_timeout": settings.keepalive_timeout,
    }
    # our own drain() has waited already when the runner's shutdown timeout applies
    runner = web.AppRunner(app, shutdown_timeout=0.1, **handler_options)
    await runner.setup()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    try:
        site = guarded_site(
            runner,
            settings.host,
            settings.port,
            handler_options=handler_options,
            reuse_port=settings.reuse_port or None,
        )
        await site.start()
        urls = [_format_address(address) for address in runner.addresses]
        log.info(
            "streamproxy %s %slistening on %s%s, storing in %s, max size %d bytes, %s loop",
            __version__,
            "" if worker is None else f"worker {worker} (pid {os.getpid()}) ",
            ", ".join(urls),
            settings.base_path or "/",
            app[STORAGE].description,
            settings.max_size,
            type(loop).__module__.split(".")[0],
        )
        pace_collector()
        if ready is not None:
            ready(urls)
        await stop.wait()
        await drain(runner, app[TRANSFERS], settings.shutdown_timeout)
    finally:
        await runner.cleanup()


async def drain(runner: web.AppRunner, transfers: TransferSlots, timeout: float) -> None:
    """Stop accepting, let transfers in flight finish for up to `timeout` seconds.

    What is still running afterwards is cancelled by the runner's clean-up, and
    each cancelled upload aborts its staged file: nothing partial is left.
    """
    for site in list(runner.sites):
        await site.stop()
    log.info(
        "shutting down: %d transfers in flight, waiting up to %gs",
        transfers.in_flight,
        timeout,
    )
    if not await transfers.wait_idle(timeout):
        log.warning("shutting down: aborting %d unfinished transfers", transfers.in_flight)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop when it is installed, else on asyncio's own loop."""
    loop_factory = None
    with contextlib.suppress(ImportError):
        import uvloop

        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        runner.run(main)
