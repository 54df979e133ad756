"""Prometheus metrics: what an operator watches on a media service.

Each application has its own registry, so several apps in one process (tests,
sub-applications) never mix their numbers; it also holds the standard
`process_*` metrics of that process.

With `--workers N` a scrape reaches one worker, yet must show the whole service:
the supervisor names a directory in PROMETHEUS_MULTIPROC_DIR before it spawns the
workers, prometheus-client's multiprocess mode keeps every worker's values there
(a dead worker's counters stay, so totals survive a restart), and a scrape merges
them: counters and histograms summed, the in-flight gauge summed over live
workers. `process_*` is given per worker, labelled `worker` (summing start
times or file-descriptor limits would mean nothing), read from /proc for the
pids the supervisor lists in the same directory.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_STORAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5)

# prometheus-client's multiprocess mode is on in a process started with this set.
MULTIPROC_DIR = "PROMETHEUS_MULTIPROC_DIR"
# In that directory, beside prometheus-client's *.db files: {"index": pid} of live workers.
WORKERS_FILE = "workers.json"


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
            multiprocess_mode="livesum",
        )
        self.received = Counter(
            "streamproxy_received_bytes",
            "File bytes received from clients and sources, by kind (upload, import).",
            ["kind"],
            registry=registry,
        )
        self.hashing = Counter(
            "streamproxy_hashing_seconds",
            "Wall-clock seconds spent in received files' digest updates (MD5, and a SHA-256 "
            "where one is announced), by kind (upload, import), on whichever thread, waits "
            "for a core and for the GIL after each update included. One upload hashes "
            "serially: when its hashing time nears its duration, it went as fast as its "
            "hashing could.",
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
            "What retention removed: expired files, stale temporaries and multipart uploads, "
            "spent upload-link claims, expired resumable uploads, and the stop markers and "
            "links (marker) and bytes (leftover) removed uploads left behind.",
            ["what"],
            registry=registry,
        )
        self.erased = Counter(
            "streamproxy_deleted_files",
            "Files deleted on request (DELETE /files), by how: one file, or a conversation.",
            ["how"],
            registry=registry,
        )
        self.retention_failures = Counter(
            "streamproxy_retention_failures",
            "Retention sweeps that failed (each is logged; the next sweep runs as usual).",
            registry=registry,
        )
        self.timed_out = Counter(
            "streamproxy_connections_timed_out",
            "Connections closed for a request head that did not arrive in time, by phase.",
            ["phase"],
            registry=registry,
        )
        self.timed_out.labels("head")
        for how in ("file", "conversation"):
            self.erased.labels(how)
        for kind in ("upload", "import", "download"):
            self.in_flight.labels(kind)
        ProcessCollector(registry=registry)
        # Labelled children by their label values: `labels()` validates and locks on
        # every call, a few microseconds a request; prometheus-client keeps every child
        # it made anyway, so these hold nothing it would have let go.
        self._request_children: dict[tuple[str, str, int], Histogram] = {}
        self._storage_children: dict[str, Histogram] = {}
        self._kind_children: dict[tuple[Counter, str], Counter] = {}

    def timed(self, operation: str) -> Timed:
        return Timed(self, operation)

    def record(self, operation: str, started: float, *_: object) -> None:
        """A storage operation that began at `started` (perf_counter) has ended; extra
        arguments are ignored, so this can be a future's done callback."""
        child = self._storage_children.get(operation)
        if child is None:
            child = self._storage_children[operation] = self.storage.labels(operation)
        child.observe(time.perf_counter() - started)

    def received_by(self, kind: str) -> Callable[[float], None]:
        """What counts the file bytes received for an upload of this kind."""
        return self._by_kind(self.received, kind).inc

    def hashed_by(self, kind: str) -> Callable[[float], None]:
        """What counts the seconds spent hashing a file of this kind."""
        return self._by_kind(self.hashing, kind).inc

    def _by_kind(self, counter: Counter, kind: str) -> Counter:
        """`counter`'s child for `kind`, made once (see `_request_children`)."""
        key = (counter, kind)
        child = self._kind_children.get(key)
        if child is None:
            child = self._kind_children[key] = counter.labels(kind)
        return child

    def request_done(self, route: str, method: str, status: int, seconds: float) -> None:
        """A request on `route` was answered with `status` after `seconds`."""
        key = (route, method, status)
        child = self._request_children.get(key)
        if child is None:
            child = self._request_children[key] = self.requests.labels(route, method, str(status))
        child.observe(seconds)


class Timed:
    """`with metrics.timed(operation):` records the block's duration however it ends. A
    class, not a `contextmanager`: every upload passes through two of these, and a
    generator costs three times as much to set up and run."""

    __slots__ = ("_metrics", "_operation", "_started")

    def __init__(self, metrics: Metrics, operation: str) -> None:
        self._metrics = metrics
        self._operation = operation
        self._started = 0.0

    def __enter__(self) -> None:
        self._started = time.perf_counter()

    def __exit__(self, *_: object) -> None:
        self._metrics.record(self._operation, self._started)


METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)


def route_label(request: web.Request) -> str:
    """The route's name, so the label set stays small whatever paths clients try."""
    route = request.match_info.route
    return route.name or ("unmatched" if route.resource is None else route.resource.canonical)


def _process_families(pid: int) -> Iterable[Metric]:
    return ProcessCollector(pid=lambda: pid, registry=None).collect()


class WorkerProcessCollector(Collector):
    """`process_*` of each live worker, labelled with its index, read from /proc."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def collect(self) -> Iterable[Metric]:
        try:
            workers: dict[str, int] = json.loads((self.directory / WORKERS_FILE).read_text())
        except (OSError, ValueError):
            return []
        merged: dict[str, Metric] = {}
        for index, pid in sorted(workers.items()):
            for family in _process_families(pid):
                target = merged.setdefault(
                    family.name, Metric(family.name, family.documentation, family.type)
                )
                for sample in family.samples:
                    labels = {**sample.labels, "worker": index}
                    target.add_sample(sample.name, labels, sample.value)
        return list(merged.values())


def forget_worker(directory: Path, pid: int) -> None:
    """A worker died: its live gauges stop counting (its counters stay in the totals)."""
    mark_process_dead(pid, str(directory))  # type: ignore[no-untyped-call]


def service_registry(own: CollectorRegistry) -> CollectorRegistry:
    """What a scrape shows: this process's registry, or every worker's under `--workers`."""
    directory = os.environ.get(MULTIPROC_DIR)
    if not directory:
        return own
    merged = CollectorRegistry()
    MultiProcessCollector(merged, path=directory)  # type: ignore[no-untyped-call]
    merged.register(WorkerProcessCollector(Path(directory)))
    return merged


async def metrics_handler(request: web.Request) -> web.Response:
    body = generate_latest(service_registry(request.config_dict[METRICS].registry))
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})
