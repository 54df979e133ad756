"""What a durable commit costs on the storage's disk, for the report's 1 MiB bound.

FastAPI's `UploadFile` does not fsync; streamproxy answers only once the bytes and the
metadata would survive a power cut. One upload at a time cannot hide that wait: the
response waits for the file's fsync and the directory's. This times those two on the
disk the servers store on, for a freshly written 1 MiB file (the 1 MiB scenario's
size), as a server publishes it: written, fsynced, linked under its name, directory
fsynced. Only the fsyncs and the link are timed: the write is in every server's figure.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
from pathlib import Path

COMMIT_ROW = "durable commit of a new 1 MiB file (fsync, link, directory fsync)"
_SIZE = 1 << 20


def commit_seconds(directory: Path, count: int = 40) -> float:
    """The median time of `count` commits of new 1 MiB files in a scratch directory
    under `directory` (removed after)."""
    data = os.urandom(_SIZE)
    times: list[float] = []
    with tempfile.TemporaryDirectory(prefix="commit-cost-", dir=directory) as scratch:
        folder = os.open(scratch, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for index in range(count):
                staged = Path(scratch) / f"staged-{index}"
                fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
                try:
                    os.write(fd, data)
                    started = time.perf_counter()
                    os.fsync(fd)
                    os.link(staged, Path(scratch) / f"file-{index}")
                    os.fsync(folder)
                    times.append(time.perf_counter() - started)
                finally:
                    os.close(fd)
        finally:
            os.close(folder)
    return statistics.median(times)


def describe_commit(directory: Path) -> str:
    return f"{commit_seconds(directory) * 1000:.2f} ms (median of 40)"


def commit_from_machine(machine: dict[str, str]) -> float | None:
    """The commit time (seconds) a Machine table recorded, if it did."""
    match = re.match(r"([\d.]+) ms", machine.get(COMMIT_ROW, ""))
    return float(match.group(1)) / 1000 if match else None
