"""`--workers N`: N processes serving one port, the kernel spreading connections (SO_REUSEPORT).

One Python process uses one core for its event loop; on a machine with more
cores, more processes serve more. The parent prepares the storage once (so a
worker starting late never removes another's upload in progress as a crash
leftover), starts the workers, says where they listen, restarts one that dies,
and on SIGTERM or SIGINT passes the signal on and waits for them to drain.
Each worker has its own transfer limit, metrics and small-file cache; only the
first runs the retention sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import queue
import signal
import socket
import time
from multiprocessing.context import SpawnProcess
from multiprocessing.queues import Queue
from types import FrameType

from .logs import configure_logging
from .server import run_loop, serve
from .settings import Settings
from .storage import open_storage

log = logging.getLogger("streamproxy")

_READY_TIMEOUT = 60.0
_RESTART_PAUSE = 1.0


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
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.context = multiprocessing.get_context("spawn")
        self.ready: Queue[tuple[int, list[str]]] = self.context.Queue()
        self.processes: dict[int, SpawnProcess] = {}
        self.stopping = False

    def start(self, index: int) -> None:
        process = self.context.Process(
            target=_worker,
            args=(self.settings, index, self.ready),
            name=f"streamproxy-worker-{index}",
            daemon=False,
        )
        process.start()
        self.processes[index] = process

    def wait_ready(self, count: int) -> list[str]:
        """The workers' URLs once `count` of them listen; a stop or a dead worker ends it."""
        urls: list[str] = []
        started = 0
        deadline = time.monotonic() + _READY_TIMEOUT
        while started < count and not self.stopping:
            try:
                _, urls = self.ready.get(timeout=0.2)
                started += 1
                continue
            except queue.Empty:
                pass
            dead = [i for i, p in self.processes.items() if not p.is_alive()]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"worker processes {dead} did not start listening")
        return urls

    def stop(self, signum: int, frame: FrameType | None = None) -> None:
        """SIGTERM: pass it on to the workers, which drain, and wait for them."""
        self.stopping = True
        for process in self.processes.values():
            if process.is_alive() and process.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    process.terminate()

    def supervise(self) -> None:
        """Restart a worker that died; return once all have exited after a stop."""
        while True:
            for index, process in list(self.processes.items()):
                process.join(timeout=0.2)
                if process.is_alive():
                    continue
                if self.stopping:
                    del self.processes[index]
                    continue
                log.warning("worker %d exited with %s; starting another", index, process.exitcode)
                time.sleep(_RESTART_PAUSE)
                self.start(index)
            if self.stopping and not self.processes:
                return


def run_workers(settings: Settings) -> None:
    """Blocking entry point for `--workers N` with N > 1."""
    configure_logging(settings.log_level, settings.log_format)
    holder, port = _reserve_port(settings)
    description = asyncio.run(_prepare_storage(settings))
    shared = settings.with_overrides(port=port, storage_prepared=True, reuse_port=True)
    supervisor = Supervisor(shared)
    signal.signal(signal.SIGTERM, supervisor.stop)
    # Ctrl-C reaches every process of the group; the workers drain by themselves.
    signal.signal(signal.SIGINT, lambda signum, frame: setattr(supervisor, "stopping", True))
    try:
        for index in range(settings.workers):
            supervisor.start(index)
        urls = supervisor.wait_ready(settings.workers)
        if supervisor.stopping:
            supervisor.supervise()
            return
        log.info(
            "streamproxy listening on %s%s with %d worker processes, storing in %s",
            ", ".join(urls),
            settings.base_path or "/",
            settings.workers,
            description,
        )
        supervisor.supervise()
    finally:
        supervisor.stopping = True
        for process in supervisor.processes.values():
            if process.is_alive():
                process.kill()
        holder.close()
