"""One big upload, compared across checkouts: its rate, its CPU and its tail.

    python -m benchmarks.upload_tail --checkout A --checkout B [--size 1G] [--rounds 6] [--raw]

starts one streamproxy per checkout (its code imported from that directory), each on
a temporary storage directory, and uploads one file at a time over a plain blocking
socket (multipart, one pre-built block sent over and over; `--raw`: a raw-body `PUT
/files` instead), the checkouts taking turns round by round: on a machine shared with
other work, what drifts over a minute hits every checkout alike, which a run of one
checkout after the other cannot give.
For each upload it records the rate, the server's CPU seconds and the tail: the
time from the last `sendall` of the body to the response head, what the server
still has to do once the client is done (the socket buffers' worth of bytes, then
the fsync and the commit), and of that the commit alone (the final fsync, the link
and the directory's fsync), from the server's own histogram in /metrics. Uploads of
earlier rounds are deleted and the page cache written back (`sync`) before each
round, so no round pays for another's writeback.
With `--aiohttp` the body is sent by the suite's own client instead (`load.upload`:
aiohttp, 256 KiB blocks, what `python -m benchmarks` sends), whose CPU competes with
the server's as in the suite; the tail is not measured then (shown as 0).
Extra flags for `streamproxy serve` follow `--`. With `--count N` each turn is N
uploads one after the other (e.g. `--size 1M --count 32`, the suite's 1 MiB one at
a time), reported as one figure: the rate over the turn, its CPU milliseconds per
upload, and the median tail and commit of its uploads. Each figure ends with how much of
the time the server spent hashing (its `streamproxy_hashing_seconds_total`): near 100% for
one big upload, it went as fast as its MD5.

With `--count N --concurrency C` each turn is N uploads, C at a time, sent by the suite's
client (e.g. `--size 5M --count 192 --concurrency 64`, near the suite's 5 MB x 64), reported
as the rate over the turn, the server's CPU seconds per GiB and how many uploads were
hashing on average (wall-clock hashing seconds per second: a waiting thread counts).

With `--wrk SIZE` each turn is instead 3 s of wrk uploading SIZE bytes per request
on 64 connections (the suite's small-upload scenario), and it reports requests per
second and the server's CPU milliseconds per request.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from . import load
from .harness import SET_ASIDE_BELOW
from .procstat import cpu_seconds, process_tree
from .servers import Streamproxy, StreamproxyRawPut, metric_total
from .warmpages import GiB, warm_memory

BLOCK = os.urandom(1024 * 1024)
UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3}


def parse_size(text: str) -> int:
    unit = UNITS.get(text[-1:].upper())
    return int(text[:-1]) * unit if unit else int(text)


def upload(port: int, size: int, raw: bool = False) -> tuple[float, float]:
    """One upload, multipart or (`raw`) a raw-body PUT; (seconds in all, seconds from the
    last byte sent to the answer)."""
    boundary = "tail" + secrets.token_hex(8)
    head = (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="conversationId"\r\n\r\nbench\r\n'
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    request = (
        "POST /files HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"Content-Length: {len(head) + size + len(tail)}\r\n\r\n"
    ).encode()
    if raw:
        head = tail = b""
        request = (
            "PUT /files?conversationId=bench&fileName=big.bin HTTP/1.1\r\n"
            "Host: 127.0.0.1\r\nConnection: close\r\n"
            f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n"
        ).encode()
    with socket.create_connection(("127.0.0.1", port)) as sock:
        started = time.perf_counter()
        sock.sendall(request + head)
        remaining = size
        view = memoryview(BLOCK)
        while remaining:
            piece = view[: min(remaining, len(BLOCK))]
            sock.sendall(piece)
            remaining -= len(piece)
        sock.sendall(tail)
        sent = time.perf_counter()
        answer = sock.recv(65536)
        answered = time.perf_counter()
    if not answer.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"upload failed: {answer[:300]!r}")
    return answered - started, answered - sent


def _target(storage: Path, port: int, raw: bool) -> Streamproxy | StreamproxyRawPut:
    """The running checkout as the suite's client addresses it."""
    server = Streamproxy(storage, [])
    server.port, server.base_url = port, f"http://127.0.0.1:{port}"
    return StreamproxyRawPut(server) if raw else server


def upload_aiohttp(storage: Path, port: int, size: int, raw: bool) -> float:
    """One upload by the suite's client (`load.upload`); the seconds it took."""
    target = _target(storage, port, raw)

    async def run() -> float:
        async with load.new_session() as session:
            started = time.perf_counter()
            await load.upload(session, target, "big.bin", size)
            return time.perf_counter() - started

    return asyncio.run(run())


@dataclass
class Checkout:
    """One checkout's server and what its uploads measured."""

    path: Path
    storage: Path
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    rates: list[float] = field(default_factory=list)
    tails: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    commits: list[float] = field(default_factory=list)
    hashing: list[float] = field(default_factory=list)  # hashing seconds per second

    def start(self, serve_args: list[str]) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        command = [
            *(sys.executable, "-m", "streamproxy", "serve", "--port", str(self.port)),
            *("--storage", str(self.storage), "--max-size", "4G", "--log-level", "warning"),
            *serve_args,
        ]
        environment = {**os.environ, "PYTHONPATH": str(self.path)}
        self.process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, cwd=self.path, env=environment
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError(f"streamproxy from {self.path} did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def clear(self) -> None:
        """Delete the uploads; small ones are set aside instead (see harness.Bench.clean)."""
        aside = self.storage.parent / f"{self.storage.name}-set-aside"
        aside.mkdir(exist_ok=True)
        for entry in self.storage.iterdir():
            if entry.name.startswith("."):
                if entry.is_dir():
                    for inner in entry.iterdir():
                        inner.unlink()
            elif entry.stat().st_size < SET_ASIDE_BELOW:
                entry.rename(aside / f"{secrets.token_hex(8)}-{entry.name}")
            else:
                entry.unlink()

    def measure(self, size: int, count: int = 1, raw: bool = False, client: str = "socket") -> str:
        """`count` uploads one after the other; per upload: CPU (ms when count > 1)."""
        assert self.process is not None
        pids = process_tree(self.process.pid)
        cpu_before = cpu_seconds(pids)
        tails, commits, seconds = [], [], 0.0
        hashing_before = self.hashing_seconds()
        for _ in range(count):
            commit_before = self.commit_seconds()
            if client == "aiohttp":
                took, tail = upload_aiohttp(self.storage, self.port, size, raw), 0.0
            else:
                took, tail = upload(self.port, size, raw)
            commits.append((self.commit_seconds() - commit_before) * 1000)
            seconds += took
            tails.append(tail * 1000)
        cpu = cpu_seconds(pids) - cpu_before
        self.hashing.append((self.hashing_seconds() - hashing_before) / seconds)
        self.cpu.append(cpu if count == 1 else cpu / count * 1000)
        self.commits.append(statistics.median(commits))
        self.rates.append(size * count / seconds / 1e6)
        self.tails.append(statistics.median(tails))
        unit = "s" if count == 1 else "ms per upload"
        return (
            f"{self.rates[-1]:.0f} MB/s, tail {self.tails[-1]:.1f} ms"
            f" (commit {self.commits[-1]:.1f} ms), cpu {self.cpu[-1]:.2f} {unit},"
            f" hashing {self.hashing[-1]:.0%} of the time"
        )

    def measure_concurrent(self, size: int, count: int, concurrency: int, raw: bool) -> str:
        """`count` uploads, `concurrency` at a time, by the suite's client (`upload_many`);
        its CPU in seconds per GiB and the uploads hashing on average."""
        assert self.process is not None
        pids = process_tree(self.process.pid)
        cpu_before, hashing_before = cpu_seconds(pids), self.hashing_seconds()
        target = _target(self.storage, self.port, raw)

        async def run() -> load.Outcome:
            async with load.new_session() as session:
                prefix = secrets.token_hex(4)
                return await load.upload_many(
                    session, target, count=count, concurrency=concurrency, size=size, prefix=prefix
                )

        outcome = asyncio.run(run())
        if outcome.errors:
            raise RuntimeError(f"uploads failed: {outcome.error_sample}")
        self.cpu.append((cpu_seconds(pids) - cpu_before) / (outcome.payload_bytes / GiB))
        self.hashing.append((self.hashing_seconds() - hashing_before) / outcome.seconds)
        self.rates.append(outcome.payload_bytes / outcome.seconds / 1e6)
        return (
            f"{self.rates[-1]:.0f} MB/s, cpu {self.cpu[-1]:.2f} s per GiB,"
            f" {self.hashing[-1]:.2f} hashing on average"
        )

    def summary_concurrent(self) -> str:
        return (
            f"{self.path}: median {statistics.median(self.rates):.0f} MB/s"
            f" ({min(self.rates):.0f}-{max(self.rates):.0f}),"
            f" server cpu {statistics.median(self.cpu):.2f} s per GiB"
            f" ({min(self.cpu):.2f}-{max(self.cpu):.2f}),"
            f" {statistics.median(self.hashing):.2f} hashing on average"
        )

    def measure_wrk(self, size: int, raw: bool = False) -> str:
        """3 s of wrk: `size`-byte multipart uploads (`raw`: raw-body PUTs) on 64
        connections."""
        assert self.process is not None
        pids = process_tree(self.process.pid)
        cpu_before = cpu_seconds(pids)
        script = load.wrk_upload_script(_target(self.storage, self.port, raw), size, "ab")
        outcome = asyncio.run(
            load.run_wrk(
                "wrk",
                f"http://127.0.0.1:{self.port}",
                script,
                connections=64,
                seconds=3,
                payload_per_request=size,
            )
        )
        if outcome.errors:
            raise RuntimeError(f"wrk: {outcome.error_sample}")
        cpu = cpu_seconds(pids) - cpu_before
        self.rates.append(outcome.requests / outcome.seconds)
        self.cpu.append(cpu / max(outcome.requests, 1) * 1000)
        return f"{self.rates[-1]:.0f} req/s, {self.cpu[-1]:.2f} CPU ms per request"

    def summary_wrk(self) -> str:
        return (
            f"{self.path}: median {statistics.median(self.rates):.0f} req/s"
            f" ({min(self.rates):.0f}-{max(self.rates):.0f}),"
            f" server CPU {statistics.median(self.cpu):.2f} ms per request"
            f" ({min(self.cpu):.2f}-{max(self.cpu):.2f})"
        )

    def commit_seconds(self) -> float:
        """The server's time spent in commits so far (its storage histogram's sum)."""
        return metric_total(
            self._metrics(), "streamproxy_storage_operation_seconds_sum", operation="commit"
        )

    def hashing_seconds(self) -> float:
        """The server's time spent hashing so far (0 from a checkout older than the metric)."""
        return metric_total(self._metrics(), "streamproxy_hashing_seconds_total")

    def _metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as answer:
            return str(answer.read().decode())

    def summary(self, count: int = 1) -> str:
        unit = "s" if count == 1 else "ms per upload"
        return (
            f"{self.path}: median {statistics.median(self.rates):.0f} MB/s"
            f" ({min(self.rates):.0f}-{max(self.rates):.0f}),"
            f" tail {statistics.median(self.tails):.1f} ms"
            f" ({min(self.tails):.1f}-{max(self.tails):.1f}),"
            f" commit {statistics.median(self.commits):.1f} ms"
            f" ({min(self.commits):.1f}-{max(self.commits):.1f}),"
            f" server cpu {statistics.median(self.cpu):.2f} {unit}"
            f" ({min(self.cpu):.2f}-{max(self.cpu):.2f}),"
            f" hashing {statistics.median(self.hashing):.0%} of the time"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.upload_tail",
        description="One big upload at a time, the checkouts taking turns; see the docstring.",
    )
    parser.add_argument(
        "--checkout", action="append", type=Path, help="a source tree (repeat; default: this one)"
    )
    parser.add_argument("--size", default="1G", help="bytes per upload (K, M, G suffixes)")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--count", type=int, default=1, help="uploads per turn, one at a time")
    parser.add_argument(
        "--concurrency",
        type=int,
        default=1,
        help="with --count: that many at a time, by the suite's aiohttp client",
    )
    parser.add_argument("--wrk", metavar="SIZE", help="small uploads with wrk instead")
    parser.add_argument("--raw", action="store_true", help="raw-body PUTs, not multipart")
    parser.add_argument(
        "--aiohttp", action="store_true", help="send with the suite's aiohttp client"
    )
    parser.add_argument("--tmpdir", help="where the storage directories go")
    parser.add_argument("serve_args", nargs="*", help="extra flags for streamproxy serve")
    arguments = parser.parse_args(argv)
    size = parse_size(arguments.size)
    workdir = Path(tempfile.mkdtemp(prefix="upload-tail-", dir=arguments.tmpdir))
    paths = arguments.checkout or [Path(__file__).resolve().parent.parent]
    checkouts = [
        Checkout(path.resolve(), workdir / f"storage-{index}") for index, path in enumerate(paths)
    ]
    with warm_memory(8 * GiB) as memory:
        print(memory, file=sys.stderr)
        try:
            for checkout in checkouts:
                checkout.start(arguments.serve_args)
                if arguments.wrk:
                    # warm-up, discarded
                    checkout.measure_wrk(parse_size(arguments.wrk), arguments.raw)
                    checkout.rates.clear()
                    checkout.cpu.clear()
                else:
                    upload(checkout.port, min(size, 64 * 1024 * 1024), arguments.raw)  # warm-up
            for round_number in range(1, arguments.rounds + 1):
                # Rotate who goes first, so no checkout always follows the same one.
                turn = round_number % len(checkouts)
                for checkout in checkouts[turn:] + checkouts[:turn]:
                    for other in checkouts:
                        other.clear()
                    os.sync()
                    if arguments.wrk:
                        result = checkout.measure_wrk(parse_size(arguments.wrk), arguments.raw)
                    elif arguments.concurrency > 1:
                        result = checkout.measure_concurrent(
                            size, arguments.count, arguments.concurrency, arguments.raw
                        )
                    else:
                        client = "aiohttp" if arguments.aiohttp else "socket"
                        result = checkout.measure(size, arguments.count, arguments.raw, client)
                    print(f"round {round_number} {checkout.path}: {result}")
            for checkout in checkouts:
                if arguments.wrk:
                    print(checkout.summary_wrk())
                elif arguments.concurrency > 1:
                    print(checkout.summary_concurrent())
                else:
                    print(checkout.summary(arguments.count))
        finally:
            for checkout in checkouts:
                checkout.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
