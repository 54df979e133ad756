"""Prometheus metrics: what an operator watches on a media service.

Each application has its own registry, so several apps in one process (tests,
sub-applications) never mix their numbers. With `--workers N` each worker
process serves its own figures.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import generate_latest

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_STORAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)


class Metrics:
    """The service's counters, gauges and histograms, on a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.in_flight = Gauge(
            "streamproxy_transfers_in_flight",
            "Transfers under way, by kind (upload, import, download).",
            ["kind"],
            registry=registry,
        )
        self.received = Counter(
            "streamproxy_received_bytes",
            "File bytes received from clients and sources, by kind (upload, import).",
            ["kind"],
            registry=registry,
        )
        self.sent = Counter(
            "streamproxy_sent_bytes", "File bytes sent to clients.", registry=registry
        )
        self.requests = Histogram(
            "streamproxy_request_duration_seconds",
            "Time from request to the end of the response, by route, method and status.",
            ["route", "method", "status"],
            buckets=_DURATION_BUCKETS,
            registry=registry,
        )
        self.refusals = Counter(
            "streamproxy_refusals",
            "Requests answered with an error, by the error code (too_large, busy, ...).",
            ["reason"],
            registry=registry,
        )
        self.storage = Histogram(
            "streamproxy_storage_operation_seconds",
            "Latency of storage operations (write, commit, abort, open, stat, ...).",
            ["operation"],
            buckets=_STORAGE_BUCKETS,
            registry=registry,
        )
        self.deleted = Counter(
            "streamproxy_retention_deleted",
            "What retention removed: expired files, stale temporaries, stale multipart uploads.",
            ["what"],
            registry=registry,
        )
        self.timed_out = Counter(
            "streamproxy_connections_timed_out",
            "Connections closed for a request head that did not arrive in time, by phase.",
            ["phase"],
            registry=registry,
        )
        self.timed_out.labels("head")
        for kind in ("upload", "import", "download"):
            self.in_flight.labels(kind)

    @contextmanager
    def timed(self, operation: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.record(operation, started)

    def record(self, operation: str, started: float, *_: object) -> None:
        """A storage operation that began at `started` (perf_counter) has ended; extra
        arguments are ignored, so this can be a future's done callback."""
        self.storage.labels(operation).observe(time.perf_counter() - started)


METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)


def route_label(request: web.Request) -> str:
    """The route's name, so the label set stays small whatever paths clients try."""
    route = request.match_info.route
    return route.name or ("unmatched" if route.resource is None else route.resource.canonical)


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as error:
        status = error.status
        raise
    finally:
        request.config_dict[METRICS].requests.labels(
            route_label(request), request.method, str(status)
        ).observe(time.perf_counter() - started)


async def metrics_handler(request: web.Request) -> web.Response:
    body = generate_latest(request.config_dict[METRICS].registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
