"""Memory the hypervisor has backed already, for the whole run.

This VM charges ~4 ns per byte the first time the guest touches a page (the
hypervisor backs it then: ~4 s per GiB), and its kernel gives freed memory back:
free page reporting (virtio-balloon) hands every free 2 MiB block to the host within
seconds, so the next use of it is a first touch again. A benchmark that deletes a
1 GiB upload then writes the next one into fresh page cache pays that again and
again: writing 1 MiB into the page cache took 1.4-5.5 ms with reporting on, 0.47 ms
with it paused (same machine, same minute). The cost lands on every server alike per
byte it stores, but it inflates and scatters the figures.

`warm_memory` pauses the reporting while the run lasts (as root: the reporting order
raised above the largest block, restored on exit) and touches the memory the run will
use once (`MADV_POPULATE_WRITE`), so the servers' page cache and heaps land on pages
already backed, as on a machine that has been up for a while. Without root, or
without reporting, it says so and changes nothing. A process killed meanwhile leaves
the reporting paused: `echo 9 > /sys/module/page_reporting/parameters/page_reporting_order`
resumes it.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import time
from collections.abc import Iterator
from pathlib import Path

REPORTING_ORDER = Path("/sys/module/page_reporting/parameters/page_reporting_order")
PAUSED_ORDER = 11  # above the buddy allocator's largest block (order 10): none qualifies
_MADV_POPULATE_WRITE = 23  # Linux 5.14; Python's mmap names it from 3.13 on
_HEADROOM = 2 << 30  # left untouched for everything else on the machine
GiB = 1 << 30


def available_memory() -> int:
    """MemAvailable from /proc/meminfo, in bytes (0 when it cannot be read)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def touch(size: int) -> float:
    """Fault in `size` bytes of anonymous memory, then free them; the seconds it took."""
    started = time.perf_counter()
    if size <= 0:
        return 0.0
    with mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) as region:
        try:
            region.madvise(_MADV_POPULATE_WRITE)
        except OSError:  # an older kernel: one write per page does the same
            for offset in range(0, size, mmap.PAGESIZE):
                region[offset] = 1
    return time.perf_counter() - started


@contextlib.contextmanager
def warm_memory(wanted: int) -> Iterator[str]:
    """Pause free page reporting and touch up to `wanted` bytes; yields what was done,
    for the report's Machine table."""
    try:
        order = REPORTING_ORDER.read_text().strip()
    except OSError:
        order = ""
    paused = False
    if order and os.geteuid() == 0 and wanted > 0:
        with contextlib.suppress(OSError):
            REPORTING_ORDER.write_text(str(PAUSED_ORDER))
            paused = True
    try:
        if not order:
            state = "no free page reporting"
        elif paused:
            state = f"free page reporting paused for the run (order {order} -> {PAUSED_ORDER})"
        else:
            state = f"free page reporting on (order {order}): freed memory is slow to reuse"
        size = min(wanted, max(0, available_memory() - _HEADROOM)) if paused or not order else 0
        if size:
            seconds = touch(size)
            state += f"; {size / GiB:.1f} GiB touched first, in {seconds:.1f} s"
        yield state
    finally:
        if paused:
            with contextlib.suppress(OSError):
                REPORTING_ORDER.write_text(order)
