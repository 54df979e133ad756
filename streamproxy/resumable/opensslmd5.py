"""OpenSSL's MD5 through ctypes: a state that can be read and set, hashed without the GIL.

hashlib's MD5 releases the GIL but cannot export its state; rehashes exports it but
holds the GIL. libcrypto's low-level MD5_Init/MD5_Update/MD5_Final work on an MD5_CTX,
a plain public struct (openssl/md5.h: the chaining words A-D, the bit count in Nl/Nh,
the pending partial block in data[16], its length in num), so the state can be read
and written field by field; and ctypes lets go of the GIL around every call into a
CDLL, so a worker thread hashes while the event loop and the file write run. The three
functions are deprecated in OpenSSL 3 but still exported (1.1 and 3.x); where
libcrypto or the symbols are missing, `load()` says so and hashstate falls back to
rehashes.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import struct
from typing import Final

from .md5state import BLOCK, Md5State

_WORDS: Final = struct.Struct("<4I")


class _Md5Ctx(ctypes.Structure):
    """openssl/md5.h's MD5_CTX (MD5_LONG is a 32-bit unsigned int on every platform)."""

    _fields_ = [
        ("A", ctypes.c_uint32),
        ("B", ctypes.c_uint32),
        ("C", ctypes.c_uint32),
        ("D", ctypes.c_uint32),
        ("Nl", ctypes.c_uint32),  # the message length in bits, low word
        ("Nh", ctypes.c_uint32),  # and high word
        ("data", ctypes.c_uint8 * BLOCK),  # the pending bytes, as bytes (MD5_LONG data[16])
        ("num", ctypes.c_uint32),  # how many of them
    ]


class _Library:
    """The three entry points, typed for ctypes."""

    def __init__(self, cdll: ctypes.CDLL) -> None:
        ctx = ctypes.POINTER(_Md5Ctx)
        self.init = cdll.MD5_Init
        self.init.argtypes, self.init.restype = [ctx], ctypes.c_int
        self.update = cdll.MD5_Update
        self.update.argtypes, self.update.restype = (
            [ctx, ctypes.c_void_p, ctypes.c_size_t],
            (ctypes.c_int),
        )
        self.final = cdll.MD5_Final
        self.final.argtypes, self.final.restype = [ctypes.c_char_p, ctx], ctypes.c_int


@functools.cache
def load() -> _Library | None:
    """libcrypto's MD5, or None if this system has none (hashstate then uses rehashes)."""
    name = ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        return _Library(ctypes.CDLL(name))
    except (OSError, AttributeError):  # not loadable, or built without the MD5 symbols
        return None


def _pointable(piece: bytes | bytearray | memoryview) -> tuple[object, int]:
    """Something ctypes passes as a pointer to the piece's bytes, and their count: no
    copy for bytes (the pump's pieces) or a writable buffer; one for a read-only view."""
    if type(piece) is bytes:
        return piece, len(piece)
    view = memoryview(piece).cast("B")
    if view.readonly:
        copied = view.tobytes()
        return copied, len(copied)
    return (ctypes.c_char * len(view)).from_buffer(view), len(view)


class OpenSslMd5:
    """MD5 over libcrypto; `state()` / `from_state()` carry it across processes."""

    __slots__ = ("_ctx", "_lib")

    def __init__(self, library: _Library) -> None:
        self._lib = library
        self._ctx = _Md5Ctx()
        if library.init(ctypes.byref(self._ctx)) != 1:
            raise RuntimeError("MD5_Init failed")

    @classmethod
    def from_state(cls, library: _Library, state: Md5State) -> OpenSslMd5:
        md5 = cls(library)
        ctx = md5._ctx
        ctx.A, ctx.B, ctx.C, ctx.D = state.words
        bits = (state.length * 8) % 2**64
        ctx.Nl, ctx.Nh = bits & 0xFFFFFFFF, bits >> 32
        ctypes.memmove(ctx.data, state.pending, len(state.pending))
        ctx.num = len(state.pending)
        return md5

    def update(self, piece: bytes | bytearray | memoryview) -> None:
        """Hash `piece`; the GIL is released for the whole call (ctypes, CDLL)."""
        buffer, length = _pointable(piece)
        if length and self._lib.update(ctypes.byref(self._ctx), buffer, length) != 1:
            raise RuntimeError("MD5_Update failed")

    def digest(self) -> bytes:
        """The digest so far, from a copy: this one goes on hashing."""
        done = _Md5Ctx.from_buffer_copy(self._ctx)
        out = ctypes.create_string_buffer(16)
        if self._lib.final(out, ctypes.byref(done)) != 1:
            raise RuntimeError("MD5_Final failed")
        return out.raw

    def state(self) -> Md5State:
        ctx = self._ctx
        length = ((ctx.Nh << 32) | ctx.Nl) // 8
        pending = bytes(ctx.data)[: ctx.num]
        return Md5State((ctx.A, ctx.B, ctx.C, ctx.D), length, pending)
