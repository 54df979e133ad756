"""A large resumable upload against the same file sent by one `POST /files`, in one run.

Starts `streamproxy serve` (fsync on, as deployed) on a temporary directory, writes a
file of `--size` bytes, then alternates, for `--rounds` rounds: the file as one
multipart `POST /files`, and the file as a tus 1.0 upload (creation, then PATCHes of
`--patch` bytes). Both are streamed from the file by aiohttp, so the client's work is
alike. Reports each one's throughput, the server's CPU seconds per GiB, the resumable
upload's peak RSS above idle (VmHWM after `/proc/PID/clear_refs`), and the ratio of
the medians. Every stored file's ETag is checked against the file's MD5.

    .venv/bin/python -m benchmarks.resumable_upload --size 1G --patch 64M --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from streamproxy.runtime.settings import parse_size

from .import_rss import free_port, reset_peak, status_kib, wait_ready

PIECE = 1024 * 1024


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def make_file(path: Path, size: int) -> str:
    """Random-looking content (so nothing compresses or dedupes), and its MD5."""
    digest = hashlib.md5(usedforsecurity=False)
    block = hashlib.sha256(b"resumable").digest() * (PIECE // 32)
    with path.open("wb") as out:
        written = 0
        while written < size:
            piece = block[: min(PIECE, size - written)]
            piece = bytes([written // PIECE % 251]) + piece[1:]  # each MiB differs
            out.write(piece)
            digest.update(piece)
            written += len(piece)
    return digest.hexdigest()


async def read_range(path: Path, start: int, length: int) -> AsyncIterator[bytes]:
    with path.open("rb") as source:
        source.seek(start)
        left = length
        while left:
            piece = source.read(min(PIECE, left))
            left -= len(piece)
            yield piece


async def post_file(session: aiohttp.ClientSession, base: str, path: Path) -> str:
    form = aiohttp.FormData()
    form.add_field("conversationId", "bench")
    with path.open("rb") as source:
        form.add_field("file", source, filename="big.bin")
        async with session.post(base + "/files", data=form) as answer:
            body = await answer.json()
            if answer.status != 200:
                raise RuntimeError(f"POST /files: {answer.status} {body}")
    return str(body["etag"])


async def tus_file(
    session: aiohttp.ClientSession, base: str, path: Path, size: int, patch: int
) -> str:
    meta = ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}"
        for key, value in (("filename", "big.bin"), ("conversationId", "bench"))
    )
    headers = {"Tus-Resumable": "1.0.0", "Upload-Length": str(size), "Upload-Metadata": meta}
    async with session.post(base + "/files/uploads", headers=headers) as answer:
        if answer.status != 201:
            raise RuntimeError(f"creation: {answer.status} {await answer.text()}")
        location = answer.headers["Location"]
    offset, etag = 0, ""
    while offset < size:
        length = min(patch, size - offset)
        headers = {
            "Tus-Resumable": "1.0.0",
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
            "Content-Length": str(length),
        }
        body = read_range(path, offset, length)
        async with session.patch(location, data=body, headers=headers) as answer:
            if answer.status != 204:
                raise RuntimeError(f"PATCH at {offset}: {answer.status} {await answer.text()}")
            offset = int(answer.headers["Upload-Offset"])
            etag = answer.headers.get("ETag", "").strip('"')
    return etag


async def run(size: int, patch: int, rounds: int, max_size: str) -> int:
    work = Path(tempfile.mkdtemp(prefix="streamproxy-resumable-bench-"))
    source = work / "big.bin"
    expected = make_file(source, size)
    storage = work / "data"
    port = free_port()
    command = [
        sys.executable, "-m", "streamproxy", "serve",
        "--port", str(port), "--storage", str(storage),
        "--max-size", max_size, "--log-level", "warning",
    ]  # fmt: skip
    server = await asyncio.create_subprocess_exec(*command)
    base = f"http://127.0.0.1:{port}"
    figures: dict[str, list[tuple[float, float]]] = {"POST /files": [], "tus PATCHes": []}
    peaks: list[float] = []
    failures = 0
    try:
        timeout = aiohttp.ClientTimeout(total=None)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            await wait_ready(session, base)
            await post_file(session, base, source)  # warm-up: page cache, first-touch pages
            for _ in range(rounds):
                for name in figures:
                    idle = status_kib(server.pid, "VmRSS")
                    reset_peak(server.pid)
                    cpu, started = cpu_seconds(server.pid), time.perf_counter()
                    if name == "POST /files":
                        etag = await post_file(session, base, source)
                    else:
                        etag = await tus_file(session, base, source, size, patch)
                    elapsed = time.perf_counter() - started
                    used = cpu_seconds(server.pid) - cpu
                    if name != "POST /files":
                        peaks.append((status_kib(server.pid, "VmHWM") - idle) / 1024)
                    failures += etag != expected
                    figures[name].append((size / elapsed / 1e6, used / (size / 2**30)))
                for stored in storage.glob("bench_*"):
                    stored.unlink()  # keep the disk from filling over the rounds
    finally:
        server.send_signal(signal.SIGTERM)
        await server.wait()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{size / 2**20:.0f} MiB, tus PATCHes of {patch / 2**20:.0f} MiB, {rounds} rounds")
    print("| upload | median MB/s | min-max | server CPU s/GiB |")
    print("|---|---|---|---|")
    medians = {}
    for name, runs in figures.items():
        speeds = [speed for speed, _ in runs]
        medians[name] = statistics.median(speeds)
        cpu_per_gib = statistics.median(cpu for _, cpu in runs)
        print(
            f"| {name} | {medians[name]:,.0f} | {min(speeds):,.0f}-{max(speeds):,.0f} "
            f"| {cpu_per_gib:.2f} |"
        )
    ratio = medians["tus PATCHes"] / medians["POST /files"]
    print(f"resumable / POST: {ratio:.2f}x; resumable peak RSS above idle {max(peaks):.1f} MiB")
    print("ETags:", "all match the file's MD5" if not failures else f"{failures} WRONG")
    return 1 if failures else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1G", help="bytes per upload (1G)")
    parser.add_argument("--patch", default="64M", help="bytes per PATCH (64M)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-size", default="2G", help="the server's --max-size")
    arguments = parser.parse_args()
    os.environ.pop("STREAMPROXY_CONFIG", None)
    size, patch = parse_size(arguments.size), parse_size(arguments.patch)
    return asyncio.run(run(size, patch, arguments.rounds, arguments.max_size))


if __name__ == "__main__":
    sys.exit(main())
