"""Downloads compared across checkouts (and nginx): range GETs or small files, with wrk.

    python -m benchmarks.download_ab --checkout A --checkout B [--nginx] [--kind range]

starts one streamproxy per checkout (its code imported from that directory, as in
`benchmarks.upload_tail`), stores the same fixture in each (a random file of `--size`
bytes through the raw-body PUT; nginx gets a copy in its root), and then drives each
server in turn with wrk for `--seconds` per turn, the order rotating every round: on a
machine shared with other work, what drifts over a minute hits every server alike.
`--kind range` is the suite's `range-1m-c16` (random `--length` ranges of the fixture,
16 connections), `--kind small` its `download-5k-c64` (the whole fixture, 64
connections; give `--size 5000`). Each turn records the rate and the server's CPU
seconds per request (from /proc, its whole process tree), which a loaded machine moves
far less than the rate. A turn with any error (non-2xx, socket error) stops the run.
Extra flags for `streamproxy serve` follow `--`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import load
from .procstat import cpu_seconds, process_tree
from .servers import Nginx
from .system import ensure_programs
from .upload_tail import Checkout, parse_size
from .warmpages import GiB, warm_memory


@dataclass
class Row:
    """One server's turns: requests per second and server CPU microseconds per request."""

    label: str
    port: int
    path: str = ""
    pid: int = 0
    rates: list[float] = field(default_factory=list)
    cpu_us: list[float] = field(default_factory=list)
    client_us: list[float] = field(default_factory=list)

    def pids(self) -> list[int]:
        return process_tree(self.pid)


def store(port: int, data: bytes) -> str:
    """The fixture through the raw-body PUT; its download path."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/files?conversationId=ab&fileName=fixture.bin",
        data=data,
        method="PUT",
        headers={"Content-Type": "application/octet-stream"},
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        name = answer.read().decode().split('"name": "', 1)[1].split('"', 1)[0]
    return f"/files/download?filename={name}"


@dataclass(frozen=True)
class Kind:
    """What each turn asks: whole small files or ranges, bytes per request, connections."""

    small: bool
    payload: int
    connections: int
    seconds: float
    rounds: int


async def turn(row: Row, script: str, kind: Kind, seconds: float) -> str:
    pids = row.pids()
    before = cpu_seconds(pids)
    client_before = _children_cpu()
    outcome = await load.run_wrk(
        "wrk",
        f"http://127.0.0.1:{row.port}",
        script,
        connections=kind.connections,
        seconds=seconds,
        payload_per_request=kind.payload,
    )
    if outcome.errors:
        raise RuntimeError(f"{row.label}: {outcome.error_sample}")
    cpu = cpu_seconds(pids) - before
    requests = max(outcome.requests, 1)
    row.rates.append(outcome.requests / outcome.seconds)
    row.cpu_us.append(cpu / requests * 1e6)
    row.client_us.append((_children_cpu() - client_before) / requests * 1e6)
    return (
        f"{row.rates[-1]:,.0f} req/s, CPU us per request: server {row.cpu_us[-1]:.0f},"
        f" wrk {row.client_us[-1]:.0f}"
    )


def _children_cpu() -> float:
    """CPU seconds of the children waited for so far: wrk's (the servers run on)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def summary(row: Row, reference: Row | None, payload: int) -> str:
    rate = statistics.median(row.rates)
    cpu = statistics.median(row.cpu_us)
    ratio = (
        f", {rate / statistics.median(reference.rates):.2f}x {reference.label}" if reference else ""
    )
    return (
        f"{row.label}: median {rate:,.0f} req/s ({min(row.rates):,.0f}-{max(row.rates):,.0f})"
        f" = {rate * payload / 1e6:,.0f} MB/s{ratio}; server CPU {cpu:.0f} us per request"
        f" ({min(row.cpu_us):.0f}-{max(row.cpu_us):.0f}) = {cpu * 1024**3 / payload / 1e6:.2f}"
        f" s/GiB; wrk {statistics.median(row.client_us):.0f} us per request"
    )


async def run(rows: list[Row], nginx: Nginx | None, data: bytes, kind: Kind) -> None:
    """nginx started and given the fixture (when asked), then the warm-up and the rounds."""
    try:
        if nginx is not None:
            await nginx.start()
            await asyncio.to_thread((nginx.storage / "fixture.bin").write_bytes, data)
            rows.insert(0, Row("nginx", nginx.port, "/fixture.bin", nginx.pid))
        scripts = {
            row.label: load.wrk_get_script(row.path)
            if kind.small
            else load.wrk_range_script(row.path, len(data), kind.payload)
            for row in rows
        }
        for row in rows:  # warm-up, discarded
            await turn(row, scripts[row.label], kind, 1)
            row.rates.clear()
            row.cpu_us.clear()
            row.client_us.clear()
        for round_number in range(1, kind.rounds + 1):
            start = round_number % len(rows)
            for row in rows[start:] + rows[:start]:
                result = await turn(row, scripts[row.label], kind, kind.seconds)
                print(f"round {round_number} {row.label}: {result}", flush=True)
    finally:
        if nginx is not None:
            await nginx.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.download_ab",
        description="Downloads with wrk, the checkouts taking turns; see the docstring.",
    )
    parser.add_argument(
        "--checkout", action="append", type=Path, help="a source tree (repeat; default: this one)"
    )
    parser.add_argument("--nginx", action="store_true", help="add nginx as a row, the reference")
    parser.add_argument("--kind", choices=("range", "small"), default="range")
    parser.add_argument("--size", default="256M", help="the fixture's bytes (K, M, G suffixes)")
    parser.add_argument("--length", default="1M", help="bytes per range (--kind range)")
    parser.add_argument("--connections", type=int, help="default 16 for range, 64 for small")
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tmpdir", help="where the storage directories go")
    parser.add_argument("serve_args", nargs="*", help="extra flags for streamproxy serve")
    arguments = parser.parse_args(argv)
    ensure_programs(["wrk", "nginx"] if arguments.nginx else ["wrk"])
    size = parse_size(arguments.size)
    small = arguments.kind == "small"
    kind = Kind(
        small=small,
        payload=size if small else parse_size(arguments.length),
        connections=arguments.connections or (64 if small else 16),
        seconds=arguments.seconds,
        rounds=arguments.rounds,
    )
    workdir = Path(tempfile.mkdtemp(prefix="download-ab-", dir=arguments.tmpdir))
    data = os.urandom(size)
    paths = arguments.checkout or [Path(__file__).resolve().parent.parent]
    checkouts = [
        Checkout(path.resolve(), workdir / f"storage-{index}") for index, path in enumerate(paths)
    ]
    rows: list[Row] = []
    nginx = Nginx(workdir, shutil.which("nginx") or "/usr/sbin/nginx") if arguments.nginx else None
    with warm_memory(4 * GiB) as memory:
        print(memory, file=sys.stderr)
        try:
            for index, checkout in enumerate(checkouts):
                checkout.storage.mkdir(parents=True)
                checkout.start(arguments.serve_args)
                assert checkout.process is not None
                path = store(checkout.port, data)
                rows.append(
                    Row(f"{index}:{checkout.path}", checkout.port, path, checkout.process.pid)
                )
            os.sync()
            asyncio.run(run(rows, nginx, data, kind))
            with open("/proc/loadavg") as loadavg:
                print("load average:", " ".join(loadavg.read().split()[:3]))
            reference = rows[0] if nginx is not None else None
            for row in rows:
                print(summary(row, reference, kind.payload))
        finally:
            for checkout in checkouts:
                checkout.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
