"""The end of one big upload: how long the answer takes after the last byte was sent.

`python -m benchmarks.upload_tail [--size 1G] [--rounds 5] [-- serve flags]` starts
streamproxy on a temporary storage directory and uploads one file over a plain
blocking socket (multipart, one pre-built block sent over and over), several times.
For each upload it prints the rate and the tail: the time from the last `sendall`
of the body to the response head, which is what the server still has to do once
the client is done (the socket buffers' worth of bytes, then the fsync and the
commit). Uploads of earlier rounds are deleted and the page cache written back
(`sync`) before each round, so no round pays for another's writeback.
"""

from __future__ import annotations

import argparse
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
from pathlib import Path

BLOCK = os.urandom(1024 * 1024)
UNITS = {"K": 1024, "M": 1024**2, "G": 1024**3}


def parse_size(text: str) -> int:
    unit = UNITS.get(text[-1:].upper())
    return int(text[:-1]) * unit if unit else int(text)


def upload(port: int, size: int) -> tuple[float, float]:
    """One multipart upload; (seconds in all, seconds from the last byte sent to the answer)."""
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


def clear(storage: Path) -> None:
    for entry in storage.iterdir():
        if entry.name.startswith("."):
            if entry.is_dir():
                for inner in entry.iterdir():
                    inner.unlink()
            continue
        entry.unlink()
    os.sync()


def wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("streamproxy did not start")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.upload_tail")
    parser.add_argument("--size", default="1G", help="bytes per upload (K, M, G suffixes)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tmpdir", help="where the storage directory goes")
    parser.add_argument("serve_args", nargs="*", help="extra flags for streamproxy serve")
    arguments = parser.parse_args(argv)
    size = parse_size(arguments.size)
    workdir = Path(tempfile.mkdtemp(prefix="upload-tail-", dir=arguments.tmpdir))
    storage = workdir / "storage"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        *(sys.executable, "-m", "streamproxy", "serve", "--port", str(port)),
        *("--storage", str(storage), "--max-size", "4G", "--log-level", "warning"),
        *arguments.serve_args,
    ]
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL)
    try:
        wait_ready(port)
        upload(port, min(size, 64 * 1024 * 1024))  # warm-up, discarded
        rates, tails = [], []
        for round_number in range(1, arguments.rounds + 1):
            clear(storage)
            seconds, tail = upload(port, size)
            rates.append(size / seconds / 1e6)
            tails.append(tail * 1000)
            print(f"round {round_number}: {rates[-1]:.0f} MB/s, tail {tails[-1]:.0f} ms")
        print(
            f"median: {statistics.median(rates):.0f} MB/s, tail {statistics.median(tails):.0f} ms"
            f" (tails {min(tails):.0f}-{max(tails):.0f} ms)"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
