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


def find(haystack: bytes | memoryview, needle: bytes) -> int:
    """`haystack.find(needle)`: the index of the first occurrence, or -1. A memoryview
    (a body read straight into a buffer: runtime/directbody.py) is searched in place
    when it is writable, as those are; a read-only one is copied first."""
    start = _address(haystack) if _memmem is not None and len(haystack) >= MIN_FOREIGN else None
    if start is None:
        return (haystack if type(haystack) is bytes else bytes(haystack)).find(needle)
    assert _memmem is not None
    at = _memmem(start, len(haystack), needle, len(needle))
    return -1 if at is None else at - start


def _address(data: bytes | memoryview) -> int | None:
    """Where `data`'s bytes are, without copying them; None for a read-only view."""
    if type(data) is bytes:
        return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(data))
    except (TypeError, ValueError):  # read-only or not contiguous
        return None
