"""What a durable commit costs on the storage's disk, for the report's 1 MiB estimate.

FastAPI's `UploadFile` does not fsync; streamproxy answers only once the bytes and the
metadata would survive a power cut. One upload at a time cannot hide all of that wait:
streamproxy starts the bytes' writeback as they arrive, but the response still waits
for the file's fsync (its size and metadata, and the disk's cache flush) and the
directory's. This times the least of it on the disk the servers store on: a 1 MiB file
(the 1 MiB scenario's size) whose bytes are already written back (sync_file_range,
waited for), then fsynced, linked under its name, its directory fsynced. Only the
fsync, the link and the directory's fsync are timed.
"""

from __future__ import annotations

import os
import re
import statistics
import tempfile
import time
from pathlib import Path

from streamproxy.storage.localfs import (
    SYNC_FILE_RANGE_WAIT_AFTER,
    SYNC_FILE_RANGE_WAIT_BEFORE,
    SYNC_FILE_RANGE_WRITE,
    sync_file_range,
)

COMMIT_ROW = "durable commit of a 1 MiB file already written back (fsync, link, directory fsync)"
_SIZE = 1 << 20
COMMITS = 40  # timed per run: the median is the row's figure


def _write_back(fd: int) -> None:
    """The file's bytes to the disk and waited for, its metadata left for the fsync (as
    streamproxy's early writeback leaves it at best); nothing where the call is missing."""
    if sync_file_range is not None:
        flags = SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE | SYNC_FILE_RANGE_WAIT_AFTER
        sync_file_range(fd, 0, 0, flags)


def commit_seconds(directory: Path, count: int = COMMITS) -> float:
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
                    _write_back(fd)
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
    return f"{commit_seconds(directory) * 1000:.2f} ms (median of {COMMITS})"


def commit_from_machine(machine: dict[str, str]) -> float | None:
    """The commit time (seconds) a Machine table recorded, if it did."""
    match = re.match(r"([\d.]+) ms", machine.get(COMMIT_ROW, ""))
    return float(match.group(1)) / 1000 if match else None
