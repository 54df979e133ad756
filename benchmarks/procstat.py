"""What a server costs, read from /proc: CPU seconds and resident memory of a process tree.

The tree matters: nginx does its work in worker processes, and streamproxy may run
several workers. CPU is utime + stime of every process of the tree (threads are
included in a process's figures); RSS is the sum of the processes' resident pages,
sampled on a thread every ~50 ms so a short peak is seen while the event loop is busy.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from pathlib import Path
from typing import NamedTuple

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
SAMPLE_INTERVAL = 0.05


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants, found through /proc/PID/task/TID/children."""
    found = [root]
    index = 0
    while index < len(found):
        pid = found[index]
        index += 1
        try:
            tasks = list(Path(f"/proc/{pid}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            found.extend(int(child) for child in children if int(child) not in found)
    return found


class Usage(NamedTuple):
    """What a process tree has used so far, from one read of each /proc/PID/stat."""

    cpu_seconds: float  # user + system
    # Minor page faults: mostly pages touched for the first time since they were mapped,
    # each a fresh zeroed page from the kernel (RESULTS.md: a server whose allocator maps
    # its buffers afresh for every request pays that per request, and runs slower for it).
    minor_faults: int


def usage(pids: list[int]) -> Usage:
    """CPU seconds and minor page faults of these processes so far (gone ones count 0)."""
    ticks = faults = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: split after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        faults += int(fields[7])  # minflt (field 10)
        ticks += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return Usage(ticks / CLOCK_TICKS, faults)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds consumed so far by these processes (gone ones count 0)."""
    return usage(pids).cpu_seconds


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of these processes together (the sum of their VmRSS)."""
    total = 0
    for pid in pids:
        try:
            resident = Path(f"/proc/{pid}/statm").read_text().split()[1]
        except (OSError, IndexError):
            continue
        total += int(resident) * PAGE_SIZE
    return total


def idle_rss(pids: list[int], samples: int = 5) -> int:
    """The median of a few samples taken 50 ms apart while nothing is in flight."""
    values = []
    for index in range(samples):
        if index:
            time.sleep(SAMPLE_INTERVAL)
        values.append(rss_bytes(pids))
    return int(statistics.median(values))


class RssSampler:
    """Samples the RSS of a process tree every ~50 ms on a thread; keeps the peak."""

    def __init__(self, pids: list[int]) -> None:
        self._pids = pids
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self.peak = 0

    def _run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes(self._pids))
            if self._stop.wait(SAMPLE_INTERVAL):
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self._pids))
