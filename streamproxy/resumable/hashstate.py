"""The whole file's MD5, carried across requests, restarts and instances.

A resumable upload's ETag is the MD5 of the whole file, like `POST /files`, and the
bytes must not be read back to compute it. hashlib cannot save its state, so the running
state comes from `rehashes` (PyPI, RustCrypto's md-5 behind a serializable state; not
`rehash`, whose restored state is wrong on Python 3.11+).

Measured on this machine (2 CPUs shared with seven other jobs, so rates are CPU time of
the hashing thread; `python -m benchmarks.hash_state`, 1 GiB in 512 KiB pieces):

- speed: hashlib 800 MiB/s, rehashes 676 MiB/s (0.85x), this class 640 MiB/s (0.80x);
- saved state: 88 bytes (plus the 5-byte header below);
- a restored state continues correctly (tests/resumable/test_hashstate.py: random data,
  random split points, a save and restore at every split, in a fresh process too);
- the GIL: rehashes holds it for a whole update call. While a worker thread is inside one
  256 MiB update, the main thread counts to 8.4 million beside hashlib but to 0.17
  million beside rehashes (only before the call starts). While a worker thread hashes
  512 KiB pieces, a 1 ms timer on the event loop is late by 10 ms on average (worst 59
  ms) with plain rehashes, 1.4 ms with hashlib: a waiting thread gets the GIL only after
  the interpreter's 5 ms switch interval and the end of the current call. Two threads
  hashing at once took 2.19x one thread's time with rehashes, 1.60x with hashlib, in the
  quietest run; later runs got about half a CPU from the machine and say nothing.

Decision: rehashes (the only correct serializable MD5 on 3.11+ found). Each update call
gets at most 512 KiB (about 0.8 ms) and is followed by `time.sleep(0)`, which lets go of
the GIL so a waiting event loop runs at once rather than after the switch interval: the
loop's mean lateness is then 1.5 ms (worst 25 ms), as with hashlib, for 5% of speed
(smaller slices cost copies: 128 KiB slices ran at 574 MiB/s). The hash still belongs
on a worker thread (it overlaps the write, which lets go of the GIL), but one process
hashes at most one core's worth of resumable bytes; `--workers` spreads uploads.
"""

from __future__ import annotations

import time
from typing import Final, Protocol, cast

import rehashes  # type: ignore[import-untyped]

SLICE: Final = 512 * 1024
"""The most bytes hashed while holding the GIL (about 0.8 ms); then others may run."""

_HEADER: Final = b"RMD5\x01"
"""Names the format (and the library behind it), so a stored state from another format is
refused instead of continuing a wrong hash."""

_STATE_SIZE: Final = 88


class _Md5(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def finalize(self) -> str: ...
    def serialize(self) -> bytes: ...


class CorruptHashState(ValueError):
    """The stored state is not one this module wrote: the upload cannot be finished."""


class ResumableMD5:
    """MD5 whose state can be saved after any byte and continued elsewhere."""

    __slots__ = ("_md5",)

    def __init__(self, _state: _Md5 | None = None) -> None:
        self._md5: _Md5 = _state if _state is not None else cast(_Md5, rehashes.PyMd5())

    def update(self, piece: bytes | bytearray | memoryview) -> None:
        """Hash `piece`; may run on a worker thread (see the module docstring)."""
        if type(piece) is bytes and len(piece) <= SLICE:
            self._md5.update(piece)  # rehashes takes bytes only: no copy for the usual case
            time.sleep(0)  # let go of the GIL: a waiting event loop runs now
            return
        view = memoryview(piece).cast("B")
        for start in range(0, len(view), SLICE):
            self._md5.update(view[start : start + SLICE].tobytes())
            time.sleep(0)

    def hexdigest(self) -> str:
        """The digest of everything so far; hashing may go on afterwards."""
        return self._md5.finalize()

    def to_bytes(self) -> bytes:
        return _HEADER + self._md5.serialize()

    @classmethod
    def from_bytes(cls, data: bytes) -> ResumableMD5:
        if len(data) != len(_HEADER) + _STATE_SIZE or not data.startswith(_HEADER):
            raise CorruptHashState(f"not a saved MD5 state ({len(data)} bytes)")
        try:
            restored = rehashes.PyMd5.deserialize(data[len(_HEADER) :])
        except ValueError as error:
            raise CorruptHashState(f"not a saved MD5 state: {error}") from error
        return cls(cast(_Md5, restored))
