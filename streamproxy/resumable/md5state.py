"""A running MD5's state in a form no library owns, and its stored layout.

MD5 carries, between 64-byte blocks, four 32-bit chaining words; besides them a running
hash only needs the count of bytes so far (for the final padding) and the bytes of the
block not yet complete. `Md5State` is exactly that, so any implementation that lets
its state be read and set (OpenSSL's MD5_CTX, rehashes) continues another's.

The stored layout (88 bytes, little-endian) is the one rehashes 0.3 serializes, which
records written before OpenSSL's MD5 was used already hold, so those uploads resume,
and instances of either version read each other's records during a rolling update:

    offset  0  16 bytes  the chaining words A, B, C, D (4 x uint32)
    offset 16   8 bytes  the count of complete 64-byte blocks hashed (uint64)
    offset 24   1 byte   n, the count of pending bytes (0-63)
    offset 25  63 bytes  the n pending bytes, then zeros
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

BLOCK: Final = 64
"""MD5's block size in bytes."""

INITIAL_WORDS: Final = (0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476)
"""A, B, C, D before any byte (RFC 1321, 3.3)."""

_LAYOUT: Final = struct.Struct("<4IQB63s")
SIZE: Final = _LAYOUT.size
"""88 bytes."""


class CorruptHashState(ValueError):
    """The stored state is not one this module wrote: the upload cannot be finished."""


@dataclass(frozen=True)
class Md5State:
    """A running MD5 after `length` bytes; `pending` are its last `length % 64` bytes."""

    words: tuple[int, int, int, int] = INITIAL_WORDS
    length: int = 0
    pending: bytes = b""

    def __post_init__(self) -> None:
        if len(self.pending) != self.length % BLOCK or self.length < 0:
            raise CorruptHashState(
                f"{len(self.pending)} pending bytes do not fit a length of {self.length}"
            )
        if not all(0 <= word < 2**32 for word in self.words):
            raise CorruptHashState("a chaining word is not 32 bits")

    def encode(self) -> bytes:
        return _LAYOUT.pack(*self.words, self.length // BLOCK, len(self.pending), self.pending)

    @classmethod
    def decode(cls, data: bytes) -> Md5State:
        if len(data) != SIZE:
            raise CorruptHashState(f"not a saved MD5 state ({len(data)} bytes)")
        a, b, c, d, blocks, count, buffer = _LAYOUT.unpack(data)
        if count >= BLOCK or any(buffer[count:]):
            raise CorruptHashState("not a saved MD5 state: the pending block is malformed")
        return cls((a, b, c, d), blocks * BLOCK + count, buffer[:count])
