"""py-spy around one extra, unmeasured run of a scenario, and the top lines of what it saw.

The profiled run is not a round: py-spy's sampling takes CPU from the same two cores,
so its rate is shown beside the profile and never enters a median. Two records run at
once: one without `--idle` (samples of active threads: running, runnable, or in a disk
wait such as `fsync`, which py-spy does not count as idle) and one
with it (every thread, so a thread waiting in `fsync` counts as time spent there: what
a disk-bound upload waits for). Shares are of each record's samples of all threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

RATE = 100  # samples per second per thread
TOP = 12
_IDLE_WORKER = re.compile(r"^_worker \(.*thread\.py:\d+\)$")
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^():]+)(?::(?P<line>\d+))?\)$")


@dataclass
class SpyProfile:
    """The top of two py-spy records of one run: on-CPU samples, and all samples."""

    scenario: str
    server: str
    rate: str  # the profiled run's own rate, e.g. "412 MB/s"
    seconds: float = 0.0
    cpu_samples: int = 0  # samples of active threads: running, runnable, in a disk wait
    wall_samples: int = 0  # samples of every thread but idle executor ones (--idle)
    cpu_threads: list[tuple[str, float]] = field(default_factory=list)
    cpu_lines: list[tuple[str, float]] = field(default_factory=list)  # self time, by line
    wall_lines: list[tuple[str, float]] = field(default_factory=list)

    def to_text(self) -> list[str]:
        cores = self.cpu_samples / RATE / self.seconds if self.seconds else 0.0
        threads = ", ".join(f"{name} {share:.0%}" for name, share in self.cpu_threads)
        lines = [
            f"py-spy, {self.scenario} on {self.server}: {self.rate} while profiled, "
            f"{self.seconds:.1f} s, ~{cores:.2f} threads active on average",
            f"  on-CPU samples by thread: {threads}",
            "  on-CPU, self, by line (share of on-CPU samples):",
        ]
        lines += [f"  {share:6.1%}  {where}" for where, share in self.cpu_lines]
        lines += ["  wall, self, by line (waits included; executor threads without work left out):"]
        lines += [f"  {share:6.1%}  {where}" for where, share in self.wall_lines]
        return lines


def short_frame(frame: str) -> str:
    """`function (path/to/file.py:123)` -> `function (file.py:123)`."""
    match = _FRAME.match(frame.strip())
    if match is None:
        return frame.strip()
    name = Path(match["file"]).name
    line = f":{match['line']}" if match["line"] else ""
    return f"{match['function']} ({name}{line})"


def thread_group(label: str) -> str:
    """`thread (1234): asyncio_3` -> `asyncio_*`: the executor's threads as one."""
    name = label.split(":", 1)[1].strip() if ":" in label else label
    return re.sub(r"\d+$", "*", name) or "unnamed"


def collapse(raw: str, *, skip_idle: bool = False) -> tuple[int, Counter[str], Counter[str]]:
    """Collapsed stacks (`thread;frame;...;frame count` per line): the sample count and
    the samples by thread group and by innermost line. `skip_idle` leaves out executor
    threads with no work (innermost frame the pool's `_worker`): a pool of 32 threads
    mostly idle would otherwise fill the wall view."""
    by_thread: Counter[str] = Counter()
    by_line: Counter[str] = Counter()
    total = 0
    for entry in raw.splitlines():
        stack, _, count_text = entry.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        if skip_idle and _IDLE_WORKER.match(frames[-1]):
            continue
        total += count
        while len(frames) > 1 and frames[0].startswith("process "):
            frames = frames[1:]  # --subprocesses: the process, then its thread
        if frames[0].startswith("thread "):
            by_thread[thread_group(frames[0])] += count
        by_line[short_frame(frames[-1])] += count
    return total, by_thread, by_line


def summarize(
    cpu_raw: str, wall_raw: str, scenario: str, server: str, rate: str, seconds: float
) -> SpyProfile:
    cpu_total, cpu_threads, cpu_lines = collapse(cpu_raw)
    wall_total, _, wall_lines = collapse(wall_raw, skip_idle=True)
    profile = SpyProfile(scenario, server, rate, seconds, cpu_total, wall_total)
    if cpu_total:
        profile.cpu_threads = [(name, n / cpu_total) for name, n in cpu_threads.most_common(5)]
        profile.cpu_lines = [(where, n / cpu_total) for where, n in cpu_lines.most_common(TOP)]
    if wall_total:
        profile.wall_lines = [(where, n / wall_total) for where, n in wall_lines.most_common(6)]
    return profile


@contextlib.asynccontextmanager
async def recording(
    py_spy: str, pid: int, output: Path, *, subprocesses: bool
) -> AsyncIterator[tuple[Path, Path]]:
    """Two py-spy records of `pid` while the block runs, on-CPU and all samples; the
    collapsed stacks land in the two paths it yields."""
    outputs = (output.with_suffix(".cpu.txt"), output.with_suffix(".wall.txt"))
    processes = []
    for path, idle in zip(outputs, ((), ("--idle",)), strict=True):
        command = [py_spy, "record", "--pid", str(pid), "--format", "raw", "--output"]
        command += [str(path), "--rate", str(RATE), "--threads", *idle]
        command += ["--nonblocking"]  # do not pause the server to sample it
        if subprocesses:
            command.append("--subprocesses")
        processes.append(
            await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL
            )
        )
    try:
        await asyncio.sleep(0.5)  # attached before the run starts
        yield outputs
    finally:
        for process in processes:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                await process.wait()


def find_py_spy() -> str | None:
    """py-spy from the bench extra, beside this interpreter, else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")
