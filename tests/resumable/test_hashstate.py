"""The saved MD5 state continues exactly where it stopped, in another process too."""

from __future__ import annotations

import hashlib
import os
import random
import subprocess
import sys
import threading
import time

import pytest
import rehashes  # type: ignore[import-untyped]

from streamproxy.resumable import opensslmd5
from streamproxy.resumable.hashstate import SLICE, CorruptHashState, ResumableMD5, new_engine
from streamproxy.resumable.md5state import Md5State


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


# The engines: OpenSSL's MD5 (ctypes, GIL released) and rehashes, one stored layout.

ENGINES = ("openssl", "rehashes")


def _engine_or_skip(name: str) -> str:
    if name == "openssl" and opensslmd5.load() is None:
        pytest.skip("needs libcrypto (Debian's package libssl3); rehashes serves without it")
    return name


@pytest.mark.parametrize("saver", ENGINES)
@pytest.mark.parametrize("restorer", ENGINES)
def test_a_state_saved_by_one_engine_continues_in_the_other(saver: str, restorer: str) -> None:
    """Many sizes and split points, a restore inside a block and at its edges."""
    rng = random.Random(f"{saver}-{restorer}")
    sizes = [0, 1, 55, 56, 63, 64, 65, 127, 128, 129, 1000, 4096, 70_001, 2 * SLICE + 3]
    for size in sizes:
        data = rng.randbytes(size)
        splits = {0, size, size // 2, size - size % 64, min(size, 64), rng.randrange(size + 1)}
        for split in sorted(splits):
            first = ResumableMD5(new_engine(name=_engine_or_skip(saver)))
            first.update(data[:split])
            second = ResumableMD5.from_bytes(first.to_bytes(), engine=_engine_or_skip(restorer))
            second.update(data[split:])
            assert second.hexdigest() == hashlib.md5(data).hexdigest(), (size, split)


@pytest.mark.parametrize("name", ENGINES)
def test_the_state_is_the_documented_layout(name: str) -> None:
    """Words, byte count and pending bytes, as md5state.py writes them, whoever hashed."""
    data = os.urandom(64 * 3 + 10)
    md5 = ResumableMD5(new_engine(name=_engine_or_skip(name)))
    md5.update(data)
    stored = md5.to_bytes()
    state = Md5State.decode(stored[5:])
    assert (state.length, state.pending) == (len(data), data[-10:])
    assert stored[5 + 16 : 5 + 25] == (3).to_bytes(8, "little") + bytes([10])
    assert Md5State.decode(state.encode()) == state


def test_states_saved_before_openssl_was_used_still_resume() -> None:
    """A record written by rehashes' own serialization (what records held until now)."""
    data = os.urandom(5000)
    old = rehashes.PyMd5()
    old.update(data[:3333])
    stored = b"RMD5\x01" + old.serialize()
    md5 = ResumableMD5.from_bytes(stored)
    md5.update(data[3333:])
    assert md5.hexdigest() == hashlib.md5(data).hexdigest()


@pytest.mark.parametrize("name", ENGINES)
def test_byte_counts_past_4_gib_carry(name: str) -> None:
    """The count crosses 2**32 bits (512 MiB) and 2**32 bytes without hashing that much:
    a state with a large count, set by arithmetic, ends with the padding rehashes gives
    it (an independent implementation), and counts on exactly."""
    _engine_or_skip(name)
    words = (0x01234567, 0x89ABCDEF, 0xFEDCBA98, 0x76543210)
    for length in (2**29 - 1, 2**29 + 5, 5 * 2**30 + 17, 2**32 * 64 + 63):
        state = Md5State(words, length, bytes(range(length % 64)))
        md5 = ResumableMD5.from_bytes(b"RMD5\x01" + state.encode(), engine=name)
        reference = ResumableMD5.from_bytes(b"RMD5\x01" + state.encode(), engine="rehashes")
        assert md5.hexdigest() == reference.hexdigest()
        md5.update(b"x" * 100)
        reference.update(b"x" * 100)
        assert md5.hexdigest() == reference.hexdigest()
        assert Md5State.decode(md5.to_bytes()[5:]).length == length + 100


def test_openssl_hashes_without_the_gil() -> None:
    """While a thread is inside one 64 MiB update, the main thread keeps running: with
    rehashes it would count to nearly nothing (the benchmark has the figures)."""
    _engine_or_skip("openssl")
    md5 = ResumableMD5(new_engine(name="openssl"))
    block = bytes(64 * 2**20)
    inside, done = threading.Event(), threading.Event()

    def work() -> None:
        inside.set()
        md5.update(block)
        done.set()

    thread = threading.Thread(target=work)
    thread.start()
    inside.wait()
    started, count = time.perf_counter(), 0
    while not done.is_set():
        count += 1
    thread.join()
    assert md5.hexdigest() == hashlib.md5(block).hexdigest()
    assert count > 1000, f"the main thread counted to {count} in {time.perf_counter() - started}"
