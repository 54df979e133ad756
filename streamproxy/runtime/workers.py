"""`--workers N`: N processes serving one port, the kernel spreading connections (SO_REUSEPORT).

One Python process uses one core for its event loop; on a machine with more
cores, more processes serve more. The parent prepares the storage once (so a
worker starting late never removes another's upload in progress as a crash
leftover), starts the workers, says where they listen, restarts one that dies,
and on SIGTERM or SIGINT passes SIGTERM on and waits for them to drain. Each
worker has its own transfer limit and small-file cache; only worker 0 (and the
worker that replaces it) runs the retention sweep. Their metrics meet in a
directory the parent creates (see metrics.py), so any worker's `/metrics`
shows the whole service.

Why not gunicorn with aiohttp's `GunicornUVLoopWebWorker`: that worker builds its
own `AppRunner` and `SockSite` inside a private `_run()`, so the guarded
connections (connections.py), our drain and the worker index (for retention)
would need a subclass overriding `_run()`; gunicorn forks where this spawns, has
no stable worker index (a replaced worker gets a new `age`), and would be a new
dependency. Both hangs it was meant to cure came from signal handlers that acted
while the supervisor was half-way through something; here a handler only
records the signal and the one loop acts on it, which removes the race instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import queue
import shutil
import signal
import socket
import tempfile
import time
from multiprocessing.connection import wait
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from pathlib import Path
from types import FrameType

from ..storage import open_storage
from .logs import configure_logging
from .metrics import MULTIPROC_DIR, WORKERS_FILE, forget_worker
from .server import run_loop, serve
from .settings import Settings

log = logging.getLogger("streamproxy")

_READY_TIMEOUT = 60.0
_RESTART_PAUSE = 1.0
_POLL = 0.2
_KILL_GRACE = 10.0  # after --shutdown-timeout, before a worker that will not exit is killed


def _reserve_port(settings: Settings) -> tuple[socket.socket, int]:
    """Bind (without listening) with SO_REUSEPORT, so `--port 0` names one port for all."""
    family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    holder.bind((settings.host, settings.port))
    return holder, int(holder.getsockname()[1])


async def _prepare_storage(settings: Settings) -> str:
    storage = open_storage(settings)
    await storage.start()
    await storage.close()
    return storage.description


def _worker(settings: Settings, index: int, ready: Queue[tuple[int, list[str]]]) -> None:
    """A worker process: the ordinary server, on the shared port, reporting when it listens."""
    configure_logging(settings.log_level, settings.log_format)
    run_loop(serve(settings, ready=lambda urls: ready.put((index, urls)), worker=index))


class Supervisor:
    """Starts, restarts and stops the workers; signal handlers only call `request_stop`."""

    def __init__(self, settings: Settings, metrics_dir: Path) -> None:
        self.settings = settings
        self.metrics_dir = metrics_dir
        self.context = multiprocessing.get_context("spawn")
        self.ready: Queue[tuple[int, list[str]]] = self.context.Queue()
        self.processes: dict[int, SpawnProcess] = {}
        self.restart_at: dict[int, float] = {}  # index -> when a dead worker is started again
        self.stop_requested = False
        self.signalled: set[int] = set()  # pids told to stop
        self.kill_at: float | None = None

    def request_stop(self, signum: int, frame: FrameType | None = None) -> None:
        """SIGTERM or SIGINT: only note it; `supervise` and `wait_ready` act on it."""
        self.stop_requested = True

    def start(self, index: int) -> None:
        process = self.context.Process(
            target=_worker,
            args=(self.settings, index, self.ready),
            name=f"streamproxy-worker-{index}",
            daemon=False,
        )
        process.start()
        self.processes[index] = process
        self._write_workers_file()

    def _write_workers_file(self) -> None:
        """Worker index and pid, for the process metrics of every worker (metrics.py)."""
        pids = {str(i): p.pid for i, p in self.processes.items() if p.pid is not None}
        staged = self.metrics_dir / (WORKERS_FILE + ".new")
        staged.write_text(json.dumps(pids))
        staged.replace(self.metrics_dir / WORKERS_FILE)

    def wait_ready(self, count: int) -> list[str]:
        """The workers' URLs once `count` of them listen; a stop or a dead worker ends it."""
        urls: list[str] = []
        started = 0
        deadline = time.monotonic() + _READY_TIMEOUT
        while started < count and not self.stop_requested:
            try:
                _, urls = self.ready.get(timeout=_POLL)
                started += 1
                continue
            except queue.Empty:
                pass
            dead = [i for i, p in self.processes.items() if not p.is_alive()]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"worker processes {dead} did not start listening")
        return urls

    def supervise(self) -> None:
        """Restart a worker that died; once a stop is requested, stop all and return."""
        while True:
            if self.stop_requested:
                self._stop_all()
            self._reap()
            if self.stop_requested and not self.processes:
                return
            self._drain_ready()
            now = time.monotonic()
            for index, when in list(self.restart_at.items()):
                if when <= now and not self.stop_requested:
                    del self.restart_at[index]
                    self.start(index)
            sentinels = [p.sentinel for p in self.processes.values()]
            if sentinels:
                wait(sentinels, timeout=_POLL)
            else:
                time.sleep(_POLL)

    def _drain_ready(self) -> None:
        """Read replaced workers' ready notes: a full queue would block a worker's exit."""
        with contextlib.suppress(queue.Empty):
            while True:
                self.ready.get_nowait()

    def _reap(self) -> None:
        for index, process in list(self.processes.items()):
            if process.is_alive():
                continue
            process.join()
            del self.processes[index]
            if process.pid is not None:
                forget_worker(self.metrics_dir, process.pid)
            if not self.stop_requested:
                log.warning("worker %d exited with %s; starting another", index, process.exitcode)
                self.restart_at[index] = time.monotonic() + _RESTART_PAUSE

    def _stop_all(self) -> None:
        """SIGTERM each worker once (they drain), drop pending restarts, kill stragglers."""
        self.restart_at.clear()
        if self.kill_at is None:
            self.kill_at = time.monotonic() + self.settings.shutdown_timeout + _KILL_GRACE
        overdue = time.monotonic() > self.kill_at
        for process in self.processes.values():
            if process.pid is None or not process.is_alive():
                continue
            if overdue:
                log.warning("worker pid %d did not stop in time; killing it", process.pid)
                process.kill()
            elif process.pid not in self.signalled:
                self.signalled.add(process.pid)
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()

    def kill_all(self) -> None:
        for process in self.processes.values():
            if process.is_alive():
                process.kill()
                process.join()


def run_workers(settings: Settings) -> None:
    """Blocking entry point for `--workers N` with N > 1."""
    configure_logging(settings.log_level, settings.log_format)
    holder, port = _reserve_port(settings)
    metrics_dir = Path(tempfile.mkdtemp(prefix="streamproxy-metrics-"))
    # Read by prometheus-client when a worker imports it: spawned workers inherit it.
    previous = os.environ.get(MULTIPROC_DIR)
    os.environ[MULTIPROC_DIR] = str(metrics_dir)
    supervisor = Supervisor(
        settings.with_overrides(port=port, storage_prepared=True, reuse_port=True), metrics_dir
    )
    # Ctrl-C reaches every process of the group and each worker drains by itself;
    # a SIGINT to the supervisor alone must stop them as SIGTERM does.
    signal.signal(signal.SIGTERM, supervisor.request_stop)
    signal.signal(signal.SIGINT, supervisor.request_stop)
    try:
        description = asyncio.run(_prepare_storage(settings))
        for index in range(settings.workers):
            if not supervisor.stop_requested:
                supervisor.start(index)
        urls = supervisor.wait_ready(settings.workers)
        if not supervisor.stop_requested:
            log.info(
                "streamproxy listening on %s%s with %d worker processes, storing in %s",
                ", ".join(urls),
                settings.base_path or "/",
                settings.workers,
                description,
            )
        supervisor.supervise()
    finally:
        supervisor.stop_requested = True
        supervisor.kill_all()
        holder.close()
        shutil.rmtree(metrics_dir, ignore_errors=True)
        if previous is None:
            os.environ.pop(MULTIPROC_DIR, None)
        else:
            os.environ[MULTIPROC_DIR] = previous
