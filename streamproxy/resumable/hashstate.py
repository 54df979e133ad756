"""The whole file's MD5, carried across requests, restarts and instances.

A resumable upload's ETag is the MD5 of the whole file, like `POST /files`, and the
bytes must not be read back to compute it. hashlib cannot save its state. The running
state is an `md5state.Md5State` (the chaining words, the byte count, the pending
partial block), stored in a documented 88-byte layout behind a 5-byte header; two
implementations read and set it:

- OpenSSL's MD5 through ctypes (opensslmd5.py), used wherever libcrypto is found: it
  hashes without the GIL, so on the storage's worker thread it runs beside the event
  loop and the file write, as hashlib's MD5 does for `POST /files`;
- `rehashes` (PyPI, RustCrypto's md-5; not `rehash`, whose restored state is wrong on
  Python 3.11+), the fallback: it holds the GIL for a whole update call, so each call
  gets at most `SLICE` bytes and is followed by `time.sleep(0)`, which hands the GIL
  to a waiting event loop at once rather than after the 5 ms switch interval.

Measured on this machine (`python -m benchmarks.hash_state --gib 0.5`, 512 KiB pieces,
CPU time of the hashing thread, 2 CPUs shared with other jobs, 2026-12-01): hashlib
720 MiB/s, OpenSSL through ctypes 708 (0.98x), rehashes 595 (0.83x), the sliced
rehashes 550 (0.76x). While a worker thread is inside one 256 MiB update the main
thread counts to 12.3 million beside OpenSSL, 8.5 million beside hashlib, 59 thousand
beside rehashes; a 1 ms timer on the event loop is late by 0.36 ms on average beside
OpenSSL, 0.63 beside hashlib, 7.3 beside plain rehashes, 1.3 beside the sliced one.
More in benchmarks/RESULTS.md. A state saved by either engine continues in the other
(tests/resumable/test_hashstate.py), and so do states saved before OpenSSL's MD5 was
used (the layout is rehashes' own serialization).
"""

from __future__ import annotations

import time
from typing import Final, Protocol

import rehashes  # type: ignore[import-untyped]

from . import opensslmd5
from .md5state import SIZE, CorruptHashState, Md5State

__all__ = ["SLICE", "CorruptHashState", "Engine", "ResumableMD5", "new_engine"]

SLICE: Final = 512 * 1024
"""rehashes: the most bytes hashed while holding the GIL (about 0.8 ms)."""

_HEADER: Final = b"RMD5\x01"
"""Names the layout (md5state.py), so a stored state in another format is refused
instead of continuing a wrong hash. The layout is the same whichever engine wrote it."""


class Engine(Protocol):
    """One MD5 implementation whose state can be read and set."""

    def update(self, piece: bytes | bytearray | memoryview, /) -> None: ...
    def digest(self) -> bytes: ...
    def state(self) -> Md5State: ...


class RehashesMd5:
    """The fallback: rehashes' MD5, sliced so the event loop is not kept waiting."""

    __slots__ = ("_md5",)

    def __init__(self, state: Md5State | None = None) -> None:
        if state is None:
            self._md5 = rehashes.PyMd5()
        else:  # its serialization is md5state's layout
            self._md5 = rehashes.PyMd5.deserialize(state.encode())

    def update(self, piece: bytes | bytearray | memoryview, /) -> None:
        if type(piece) is bytes and len(piece) <= SLICE:
            self._md5.update(piece)  # rehashes takes bytes only: no copy for the usual case
            time.sleep(0)  # let go of the GIL: a waiting event loop runs now
            return
        view = memoryview(piece).cast("B")
        for start in range(0, len(view), SLICE):
            self._md5.update(view[start : start + SLICE].tobytes())
            time.sleep(0)

    def digest(self) -> bytes:
        return bytes.fromhex(self._md5.finalize())

    def state(self) -> Md5State:
        return Md5State.decode(self._md5.serialize())


def _openssl(state: Md5State | None) -> Engine | None:
    library = opensslmd5.load()
    if library is None:
        return None
    if state is None:
        return opensslmd5.OpenSslMd5(library)
    return opensslmd5.OpenSslMd5.from_state(library, state)


def new_engine(state: Md5State | None = None, *, name: str | None = None) -> Engine:
    """OpenSSL's MD5 where libcrypto is found (or `name` asks for it), else rehashes."""
    if name != "rehashes":
        engine = _openssl(state)
        if engine is not None:
            return engine
        if name == "openssl":
            raise RuntimeError("libcrypto's MD5 is not available here")
    return RehashesMd5(state)


class ResumableMD5:
    """MD5 whose state can be saved after any byte and continued elsewhere."""

    __slots__ = ("_engine",)

    def __init__(self, engine: Engine | None = None) -> None:
        self._engine = engine if engine is not None else new_engine()

    def update(self, piece: bytes | bytearray | memoryview) -> None:
        """Hash `piece`; meant for a worker thread (see the module docstring)."""
        self._engine.update(piece)

    def hexdigest(self) -> str:
        """The digest of everything so far; hashing may go on afterwards."""
        return self._engine.digest().hex()

    def to_bytes(self) -> bytes:
        return _HEADER + self._engine.state().encode()

    @classmethod
    def from_bytes(cls, data: bytes, *, engine: str | None = None) -> ResumableMD5:
        """Continue a saved state, with `engine` ("openssl", "rehashes") or the default."""
        if len(data) != len(_HEADER) + SIZE or not data.startswith(_HEADER):
            raise CorruptHashState(f"not a saved MD5 state ({len(data)} bytes)")
        state = Md5State.decode(data[len(_HEADER) :])
        return cls(new_engine(state, name=engine))
