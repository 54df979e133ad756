"""The saved MD5 state continues exactly where it stopped, in another process too."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys

import pytest

from streamproxy.resumable.hashstate import SLICE, CorruptHashState, ResumableMD5


def test_restored_state_at_random_split_points_equals_hashlib() -> None:
    rng = random.Random(12)
    for _ in range(20):
        data = rng.randbytes(rng.randrange(0, 3 * SLICE))
        splits = sorted(rng.randrange(0, len(data) + 1) for _ in range(rng.randrange(0, 8)))
        state = ResumableMD5().to_bytes()
        start = 0
        for end in [*splits, len(data)]:
            md5 = ResumableMD5.from_bytes(state)
            md5.update(data[start:end])
            state = md5.to_bytes()
            start = end
        assert ResumableMD5.from_bytes(state).hexdigest() == hashlib.md5(data).hexdigest()


def test_every_split_of_a_block_boundary_region() -> None:
    """MD5 works in 64-byte blocks: a save inside, at and around a block edge."""
    data = os.urandom(200)
    expected = hashlib.md5(data).hexdigest()
    for split in range(len(data) + 1):
        first = ResumableMD5()
        first.update(data[:split])
        second = ResumableMD5.from_bytes(first.to_bytes())
        second.update(data[split:])
        assert second.hexdigest() == expected, split


def test_accepts_the_pump_piece_types_and_slices_large_ones() -> None:
    data = os.urandom(SLICE * 2 + 17)
    for piece in (data, bytearray(data), memoryview(data), memoryview(bytearray(data))):
        md5 = ResumableMD5()
        md5.update(piece)
        assert md5.hexdigest() == hashlib.md5(data).hexdigest()


def test_hexdigest_does_not_end_the_hash() -> None:
    md5 = ResumableMD5()
    md5.update(b"abc")
    assert md5.hexdigest() == hashlib.md5(b"abc").hexdigest()
    md5.update(b"def")
    assert md5.hexdigest() == hashlib.md5(b"abcdef").hexdigest()


def test_empty_file() -> None:
    assert ResumableMD5().hexdigest() == hashlib.md5(b"").hexdigest()
    assert ResumableMD5.from_bytes(ResumableMD5().to_bytes()).hexdigest() == (
        "d41d8cd98f00b204e9800998ecf8427e"
    )


def test_state_is_small() -> None:
    md5 = ResumableMD5()
    md5.update(os.urandom(1000))
    assert len(md5.to_bytes()) == 93


@pytest.mark.parametrize(
    "stored",
    [b"", b"RMD5\x01", b"RMD5\x02" + bytes(88), b"RMD5\x01" + b"\xff" * 88, b"x" * 93],
)
def test_a_state_this_module_did_not_write_is_refused(stored: bytes) -> None:
    with pytest.raises(CorruptHashState):
        ResumableMD5.from_bytes(stored)


_CHILD = """
import sys
from streamproxy.resumable.hashstate import ResumableMD5
state, rest = sys.stdin.buffer.read().split(b"\\n", 1)
md5 = ResumableMD5.from_bytes(bytes.fromhex(state.decode()))
md5.update(rest)
print(md5.hexdigest())
"""


def test_state_continues_in_a_fresh_process() -> None:
    """What a restart or another worker does: only the saved bytes cross over."""
    data = os.urandom(300_001)
    md5 = ResumableMD5()
    md5.update(data[:123_457])
    child = subprocess.run(
        [sys.executable, "-c", _CHILD],
        input=md5.to_bytes().hex().encode() + b"\n" + data[123_457:],
        capture_output=True,
        check=True,
        timeout=60,
    )
    digest = child.stdout.decode().strip()
    assert digest == hashlib.md5(data).hexdigest()
