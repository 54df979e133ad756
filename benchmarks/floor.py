"""How close streamproxy is to the floor an aiohttp application stands on, with wrk.

    python -m benchmarks.floor --kind range|upload [--checkout A] [--rounds 6]

Runs, turn by turn with the order rotating every round (as `benchmarks.download_ab`),
the reference the issue grades against, the aiohttp floor (`benchmarks.peer_floor`:
aiohttp's low-level server doing only what the request needs, see its docstring) and
streamproxy from each checkout:

- `--kind range`: nginx, the floor, streamproxy, asked for random 1 MiB ranges of one
  256 MiB file on 16 connections (the suite's `range-1m-c16`);
- `--kind upload`: FastAPI + uvicorn, the floor with its bare durable store, the floor
  storing nothing (`floor-nodisk`), streamproxy, sent 5 KB multipart uploads on 64
  connections (the suite's `upload-5k-c64`).

Each turn records requests per second, the server's CPU microseconds per request and
wrk's. If the floor itself stays under a target's ratio, no change to streamproxy's
own code can reach it on this machine: that is the figure RESULTS.md cites.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
from pathlib import Path

from . import load
from .download_ab import Kind, Row, store, summary, turn
from .servers import FastAPIPeer, FloorPeer, Nginx, Server
from .system import ensure_programs
from .upload_tail import Checkout, parse_size
from .warmpages import GiB, warm_memory


async def run(workdir: Path, checkouts: list[Checkout], arguments: argparse.Namespace) -> list[Row]:
    """Start the peers, give each its fixture or script, then the warm-up and the rounds."""
    upload = arguments.kind == "upload"
    size = parse_size("5000" if upload else "256M")
    kind = Kind(
        small=upload,
        payload=size if upload else parse_size("1M"),
        connections=64 if upload else 16,
        seconds=arguments.seconds,
        rounds=arguments.rounds,
    )
    data = os.urandom(size)
    peers: list[Server] = [
        FastAPIPeer(workdir) if upload else Nginx(workdir, shutil.which("nginx") or "nginx"),
        FloorPeer(workdir),
    ]
    if upload:
        peers.append(FloorPeer(workdir, durable=False))
    rows: list[Row] = []
    scripts: dict[str, str] = {}  # range GETs: one script per row
    targets: dict[str, Server] = {}  # uploads: whom each row's script is shaped for
    try:
        for peer in peers:
            await peer.start()
            rows.append(Row(peer.name, peer.port, pid=peer.pid))
            if upload:
                targets[peer.name] = peer
            else:
                await asyncio.to_thread((peer.storage / "fixture.bin").write_bytes, data)
                path = (
                    "/fixture.bin"
                    if peer.name == "nginx"
                    else "/files/download?filename=fixture.bin"
                )
                scripts[peer.name] = load.wrk_range_script(path, size, kind.payload)
        for index, checkout in enumerate(checkouts):
            assert checkout.process is not None
            label = f"streamproxy {index}:{checkout.path}"
            rows.append(Row(label, checkout.port, pid=checkout.process.pid))
            if upload:
                targets[label] = peers[0]  # the same multipart POST /files
            else:
                path = await asyncio.to_thread(store, checkout.port, data)
                scripts[label] = load.wrk_range_script(path, size, kind.payload)

        def script(row: Row) -> str:
            """An upload script is made for every turn: its names are new (load.py)."""
            if upload:
                return load.wrk_upload_script(targets[row.label], size, "floor")
            return scripts[row.label]

        for row in rows:  # warm-up, discarded
            await turn(row, script(row), kind, 1)
            row.rates.clear()
            row.cpu_us.clear()
            row.client_us.clear()
        for round_number in range(1, kind.rounds + 1):
            start = round_number % len(rows)
            for row in rows[start:] + rows[:start]:
                result = await turn(row, script(row), kind, kind.seconds)
                print(f"round {round_number} {row.label}: {result}", flush=True)
    finally:
        for peer in peers:
            await peer.stop()
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.floor",
        description="streamproxy beside the aiohttp floor and the reference; see the docstring.",
    )
    parser.add_argument("--kind", choices=("range", "upload"), default="range")
    parser.add_argument(
        "--checkout", action="append", type=Path, help="a source tree (repeat; default: this one)"
    )
    parser.add_argument("--seconds", type=float, default=3)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--tmpdir", help="where the storage directories go")
    arguments = parser.parse_args(argv)
    ensure_programs(["wrk"] if arguments.kind == "upload" else ["wrk", "nginx"])
    workdir = Path(tempfile.mkdtemp(prefix="floor-", dir=arguments.tmpdir))
    paths = arguments.checkout or [Path(__file__).resolve().parent.parent]
    checkouts = [
        Checkout(path.resolve(), workdir / f"storage-{index}") for index, path in enumerate(paths)
    ]
    with warm_memory(4 * GiB) as memory:
        print(memory, file=sys.stderr)
        try:
            for checkout in checkouts:
                checkout.storage.mkdir(parents=True)
                checkout.start([])
            rows = asyncio.run(run(workdir, checkouts, arguments))
            with open("/proc/loadavg") as loadavg:
                print("load average:", " ".join(loadavg.read().split()[:3]))
            for row in rows:
                print(summary(row, rows[0], 5000 if arguments.kind == "upload" else 1024 * 1024))
        finally:
            for checkout in checkouts:
                checkout.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
