"""`bytes.find` for large pieces, through the C library's `memmem` where it has one.

Every byte of a multipart upload is searched for the delimiter, on the event
loop's thread. CPython 3.11's `bytes.find` (Horspool with a 64-bit bloom filter,
or two-way) reads a 24-byte delimiter through random 256 KiB pieces at ~4 GB/s
here, glibc's `memmem` (Horspool on byte pairs) at ~8-14 GB/s; in the server, where
the bytes arrive out of this core's cache, 0.35 -> ~0.28 CPU seconds per GiB
(benchmarks/RESULTS.md, history, 2026-12-02).
Small pieces keep `bytes.find`, whose call costs less than the foreign one; without
`memmem` (or ctypes) every piece does.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

# Below this, the call through ctypes (~2.7 µs with the cast) costs more than the search
# saves: bytes.find reads ~0.25 ns a byte, memmem ~0.075.
MIN_FOREIGN = 16 * 1024

_Memmem = Callable[[int, int, bytes, int], int | None]


def _load_memmem() -> _Memmem | None:
    """libc's memmem, called holding the GIL (PyDLL): a search of a piece takes tens of
    microseconds, and taking the GIL back on the event loop would wait for busy threads."""
    try:
        memmem = ctypes.PyDLL(None).memmem
    except (OSError, AttributeError, TypeError):  # no libc symbols to look up, no memmem
        return None
    memmem.restype = ctypes.c_void_p
    memmem.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p, ctypes.c_size_t)
    found: _Memmem = memmem
    return found


_memmem = _load_memmem()


def find(haystack: bytes, needle: bytes) -> int:
    """`haystack.find(needle)`: the index of the first occurrence, or -1."""
    if _memmem is None or len(haystack) < MIN_FOREIGN or type(haystack) is not bytes:
        return haystack.find(needle)
    start = ctypes.cast(ctypes.c_char_p(haystack), ctypes.c_void_p).value  # no copy
    assert start is not None
    at = _memmem(start, len(haystack), needle, len(needle))
    return -1 if at is None else at - start
