"""What the harness reads from /proc about a server, and how issue 13's table shows it.

Page faults per request are recorded because they explain a reference's rate: a
FastAPI process whose allocator maps its 1 MiB spool buffers afresh for every upload
takes ~480 minor faults per upload and runs slower than one that reuses its heap
(benchmarks/RESULTS.md). The count must be the process's own, and the 1 MiB row must
say it beside the ratio.
"""

from __future__ import annotations

import subprocess
import sys

from benchmarks.cells import summarize
from benchmarks.commitcost import COMMIT_ROW
from benchmarks.harness import RunRecord, SuiteResult
from benchmarks.procstat import usage
from benchmarks.targets import Bounds

PAGES = 4096
_TOUCHER = f"""
import mmap, sys
area = mmap.mmap(-1, {PAGES} * mmap.PAGESIZE)
area.madvise(mmap.MADV_NOHUGEPAGE)  # one fault per page, not per huge page
print("mapped", flush=True)
sys.stdin.readline()
for offset in range(0, len(area), mmap.PAGESIZE):
    area[offset] = 1
print("touched", flush=True)
sys.stdin.readline()
"""


def test_minor_faults_count_the_pages_a_process_touches_for_the_first_time() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", _TOUCHER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    try:
        assert child.stdout.readline() == "mapped\n"
        before = usage([child.pid]).minor_faults
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline() == "touched\n"
        touched = usage([child.pid]).minor_faults - before
        # every page once, plus the few the interpreter itself touches meanwhile
        assert PAGES <= touched < PAGES + 512, touched
        assert usage([child.pid]).minor_faults - before == touched  # a waiting process adds none
    finally:
        child.stdin.close()
        child.wait(timeout=10)
    assert usage([child.pid]) == (0.0, 0)  # gone: counts nothing, raises nothing


def _record(server: str, round_: int, faults: float) -> RunRecord:
    return RunRecord(
        "upload-1m",
        server,
        round_,
        "ok",
        seconds=1.0,
        payload_bytes=128 << 20,
        requests=128,
        extra={"faults_per_request": faults},
    )


def test_the_one_at_a_time_bound_names_each_servers_page_faults_per_upload() -> None:
    scenario = {"key": "upload-1m", "title": "1 MiB", "unit": "MB/s", "servers": []}
    records = [
        _record(server, round_, faults)
        for round_ in (1, 2, 3)
        for server, faults in (
            ("fastapi", 470.0 + round_),
            ("streamproxy", 1.0),
            ("streamproxy-nofsync", 0.0),
        )
    ]
    result = SuiteResult(
        *("full", {}, 3, True, "", "", 0.0, "", "", "", ""),
        machine={COMMIT_ROW: "0.27 ms (median of 40)"},
        streamproxy_args=[],
        scenarios=[scenario],
        servers=["fastapi", "streamproxy"],
        unavailable_servers={},
        records=records,
        complete=False,
    )
    bound = Bounds(result, summarize(result)).one_at_a_time()
    assert bound.endswith("; page faults per upload: fastapi 472, streamproxy 1"), bound
