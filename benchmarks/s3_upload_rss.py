"""Peak memory of one large upload to S3: the `streamproxy serve` process, not the client.

Starts moto's S3 server and `streamproxy serve --storage s3://...` as
subprocesses, resets the server's peak-RSS counter once it is idle, streams one
upload of SIZE random bytes through it (then downloads it back), and reports
VmHWM above the idle VmRSS from /proc/PID/status. Memory per transfer should be
about two S3 parts plus socket buffers, whatever the file size.

    .venv/bin/python -m benchmarks.s3_upload_rss [--size 256M] [--part-size 8M]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp

from streamproxy.runtime.settings import parse_size
from tests.s3support import BUCKET, FAKE_AWS, MotoServer, free_port

MiB = 1024 * 1024
CHUNK = 256 * 1024


def status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak(pid: int) -> bool:
    """Writing 5 to clear_refs sets VmHWM back to the current RSS (Linux 4.0+)."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


async def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(200):
            if process.poll() is not None:
                raise RuntimeError("streamproxy exited during start-up")
            try:
                async with session.get(url + "/readyz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("streamproxy did not get ready")


async def upload(url: str, size: int) -> tuple[dict[str, object], str, float]:
    digest = hashlib.md5(usedforsecurity=False)

    async def body() -> AsyncIterator[bytes]:
        sent = 0
        while sent < size:
            chunk = os.urandom(min(CHUNK, size - sent))
            digest.update(chunk)
            sent += len(chunk)
            yield chunk

    form = aiohttp.FormData()
    form.add_field("conversationId", "bench")
    form.add_field("file", body(), filename="big.bin", content_type="application/octet-stream")
    started = time.perf_counter()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session,
        session.post(url + "/files", data=form) as response,
    ):
        answer: dict[str, object] = await response.json()
        if response.status != 200:
            raise RuntimeError(f"upload failed: {response.status} {answer}")
    return answer, digest.hexdigest(), time.perf_counter() - started


async def download(url: str, name: str) -> tuple[str, float]:
    digest = hashlib.md5(usedforsecurity=False)
    started = time.perf_counter()
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session,
        session.get(url + "/files/download", params={"filename": name}) as response,
    ):
        async for chunk in response.content.iter_chunked(CHUNK):
            digest.update(chunk)
    return digest.hexdigest(), time.perf_counter() - started


def serve_command(endpoint: str, port: int, part_size: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "streamproxy",
        "serve",
        "--port",
        str(port),
        "--storage",
        f"s3://{BUCKET}/bench",
        "--s3-endpoint",
        endpoint,
        "--s3-part-size",
        part_size,
        "--max-size",
        "1G",
        "--log-level",
        "warning",
    ]


async def measure(process: subprocess.Popen[bytes], url: str, size: int) -> None:
    await wait_ready(url, process)
    await asyncio.sleep(0.5)
    idle = status_kib(process.pid, "VmRSS")
    cleared = reset_peak(process.pid)
    answer, expected, upload_seconds = await upload(url, size)
    peak_upload = status_kib(process.pid, "VmHWM")
    assert answer["etag"] == expected, "the returned ETag is not the MD5 of the content"
    reset_peak(process.pid)
    got, download_seconds = await download(url, str(answer["name"]))
    peak_download = status_kib(process.pid, "VmHWM")
    assert got == expected, "the download differs from the upload"
    print(f"upload of {size / MiB:.0f} MiB: {size / MiB / upload_seconds:.0f} MiB/s")
    print(f"download: {size / MiB / download_seconds:.0f} MiB/s")
    print(f"idle VmRSS: {idle / 1024:.1f} MiB (peak counter reset: {cleared})")
    print(
        f"upload peak VmHWM: {peak_upload / 1024:.1f} MiB, "
        f"+{(peak_upload - idle) / 1024:.1f} MiB above idle"
    )
    print(
        f"download peak VmHWM: {peak_download / 1024:.1f} MiB, "
        f"+{(peak_download - idle) / 1024:.1f} MiB above idle"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="256M", help="bytes to upload (default 256M)")
    parser.add_argument("--part-size", default="8M", help="--s3-part-size (default 8M)")
    arguments = parser.parse_args()
    os.environ.update(FAKE_AWS)
    workdir = Path("benchmarks/out")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    with MotoServer.running(workdir / "moto.log") as moto:
        command = serve_command(moto.endpoint, port, arguments.part_size)
        print("$ python", " ".join(command[1:]))
        with open(workdir / "streamproxy.log", "wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        try:
            asyncio.run(measure(process, f"http://127.0.0.1:{port}", parse_size(arguments.size)))
        finally:
            process.terminate()
            process.wait(20)


if __name__ == "__main__":
    main()
