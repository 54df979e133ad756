"""The C heap's thresholds, fixed so that request bodies reuse memory instead of new pages.

A body arrives as bytes objects of up to ~256 KB (the event loop's reads), each held
until its batch is written and hashed. glibc's thresholds adjust themselves: blocks
that size come from the top of the heap, and the top goes back to the kernel as soon
as a few hundred KiB of it are free, so about one piece in five lands on pages the
kernel must map and zero again: ~50,000 page faults per GiB uploaded, all on the
event loop's thread (benchmarks/RESULTS.md, history, 2026-12-01 08:17). Fixed
thresholds keep blocks below 1 MiB in the heap and give its top back only past 8 MiB
free: the faults go, and a process holds at most those 8 MiB more than it uses.
`MALLOC_*` variables in the environment (glibc's own way to set these) win: then
nothing is changed here.
"""

from __future__ import annotations

import ctypes
import os
import platform

M_TRIM_THRESHOLD = -1  # glibc's malloc.h
M_MMAP_THRESHOLD = -3
TRIM_THRESHOLD = 8 * 1024 * 1024
MMAP_THRESHOLD = 1024 * 1024


def fix_heap_thresholds() -> bool:
    """Set the thresholds on glibc; False where it is another libc or the environment
    sets them already."""
    if platform.libc_ver()[0] != "glibc":
        return False
    if any(name.startswith("MALLOC_") and name.endswith("_") for name in os.environ):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(
        mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
