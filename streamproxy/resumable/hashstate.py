"""The whole file's MD5, carried across requests, restarts and instances.

A resumable upload's ETag is the MD5 of the whole file, like `POST /files`, and the
bytes must not be read back to compute it. hashlib cannot save its state, so the running
state comes from `rehashes` (PyPI, RustCrypto's md-5 behind a serializable state; not
`rehash`, whose restored state is wrong on Python 3.11+).

Measured on this machine (2 CPUs shared with other jobs, load ~6, so the absolute rates
are low; `python -m benchmarks.hash_state`, 1 GiB in 512 KiB pieces):

- speed: hashlib 288 MiB/s, rehashes 261 MiB/s (0.91x; another run 0.83x);
- saved state: 88 bytes (plus the 5-byte header below);
- a restored state continues correctly (tests/resumable/test_hashstate.py: random data,
  random split points, a save and restore at every split, equal to hashlib);
- the GIL: rehashes holds it. Two threads hashing at once take 2.19x one thread's time
  (hashlib 1.60x: it lets go of the GIL). While a worker thread hashes 512 KiB pieces,
  a 1 ms timer on the event loop is late by 7 to 11 ms on average, worst 34 to 158 ms
  (hashlib: 1.6 ms mean), because the loop waits the interpreter's 5 ms switch interval
  for each hand-over.

Decision: use rehashes (the only correct serializable MD5 on 3.11+ we found, within 10 to
17% of hashlib), and feed it in slices of at most 128 KiB with `time.sleep(0)` between
them. The sleep lets go of the GIL, so a waiting event loop gets it at once rather than
after the switch interval: the loop's mean lateness drops from 10.7 ms to 0.75 ms for
about 15% more hashing time. A worker thread is still right for the hash (it overlaps with
the write, which releases the GIL), but one process hashes at most one core's worth of
resumable bytes; `--workers` spreads uploads over cores.
"""

from __future__ import annotations

import time
from typing import Final, Protocol, cast

import rehashes  # type: ignore[import-untyped]

SLICE: Final = 128 * 1024
"""The most bytes hashed while holding the GIL; then the thread lets others run."""

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
        view = memoryview(piece).cast("B")
        size = len(view)
        if size <= SLICE:
            self._md5.update(piece if type(piece) is bytes else view.tobytes())
            return
        for start in range(0, size, SLICE):
            self._md5.update(view[start : start + SLICE].tobytes())
            time.sleep(0)  # let go of the GIL: a waiting event loop runs now

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
