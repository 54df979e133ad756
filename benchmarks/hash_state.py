"""The resumable MD5s against hashlib: the figures behind streamproxy/resumable/hashstate.py.

Run as `python -m benchmarks.hash_state [--gib 1] [--piece-kib 512]`. It compares hashlib,
plain rehashes, and streamproxy's two engines (OpenSSL's MD5 through ctypes, and the
sliced rehashes fallback) on the same data: single-thread speed (best of three), the
size of the saved state, and whether the hash holds the GIL (two threads hashing at
once, how far the main thread gets during one large update, and how long the event
loop stalls while a worker thread hashes). Correctness of a restored state is a unit
test (tests/resumable/test_hashstate.py), not a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import threading
import time
from collections.abc import Callable

import rehashes  # type: ignore[import-untyped]

from streamproxy.resumable import opensslmd5
from streamproxy.resumable.hashstate import ResumableMD5, new_engine

Hasher = Callable[[list[bytes]], object]


def with_hashlib(pieces: list[bytes]) -> object:
    h = hashlib.md5()
    for piece in pieces:
        h.update(piece)
    return h.hexdigest()


def with_rehashes(pieces: list[bytes]) -> object:
    h = rehashes.PyMd5()
    for piece in pieces:
        h.update(piece)
    return h.finalize()


def with_engine(name: str) -> Hasher:
    """streamproxy's ResumableMD5 over one engine."""

    def hasher(pieces: list[bytes]) -> object:
        h = ResumableMD5(new_engine(name=name))
        for piece in pieces:
            h.update(piece)
        return h.hexdigest()

    return hasher


HASHERS: tuple[tuple[str, Hasher], ...] = (
    ("hashlib", with_hashlib),
    ("rehashes", with_rehashes),
    ("sliced rehashes", with_engine("rehashes")),
    *((("OpenSSL ctypes", with_engine("openssl")),) if opensslmd5.load() is not None else ()),
)
WIDTH = max(len(name) for name, _ in HASHERS)


def best_of(runs: int, hasher: Hasher, pieces: list[bytes]) -> float:
    """CPU seconds of the hashing thread: other jobs on the machine do not count."""
    times = []
    for _ in range(runs):
        started = time.thread_time()
        hasher(pieces)
        times.append(time.thread_time() - started)
    return min(times)


def two_threads(hasher: Hasher, pieces: list[bytes]) -> tuple[float, float]:
    """Two threads each hashing all of `pieces` at once: wall seconds, and the CPUs used
    (process CPU time over wall time: near 2 when the hash lets go of the GIL, at most 1
    when it holds it)."""
    threads = [threading.Thread(target=hasher, args=(pieces,)) for _ in range(2)]
    started, cpu = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return wall, (time.process_time() - cpu) / wall


def main_thread_progress(update: Callable[[bytes], object], block: bytes) -> int:
    """How far the main thread counts while a worker thread is inside one `update(block)`:
    zero (or nearly) when the hash holds the GIL for the whole call, whatever the load."""
    inside = threading.Event()
    done = threading.Event()

    def work() -> None:
        inside.set()
        update(block)
        done.set()

    thread = threading.Thread(target=work)
    thread.start()
    inside.wait()
    count = 0
    while not done.is_set():
        count += 1
    thread.join()
    return count


async def loop_stall(hasher: Hasher, pieces: list[bytes]) -> tuple[float, float]:
    """Worst and mean lateness of a 1 ms timer on the loop while a thread hashes."""
    loop = asyncio.get_running_loop()
    work = loop.run_in_executor(None, hasher, pieces)
    late: list[float] = []
    while not work.done():
        planned = time.perf_counter() + 0.001
        await asyncio.sleep(0.001)
        late.append(time.perf_counter() - planned)
    await work
    return max(late), sum(late) / len(late)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--piece-kib", type=int, default=512)
    args = parser.parse_args()
    piece_size = args.piece_kib * 1024
    distinct = [os.urandom(piece_size) for _ in range(8)]
    count = int(args.gib * 2**30) // piece_size
    pieces = [distinct[i % len(distinct)] for i in range(count)]
    total = count * piece_size
    print(f"{total / 2**20:.0f} MiB in {args.piece_kib} KiB pieces, {os.cpu_count()} CPUs")

    state = rehashes.PyMd5()
    state.update(pieces[0][:1000])
    print(f"saved MD5 state: {len(state.serialize())} bytes")

    one: dict[str, float] = {}
    for name, hasher in HASHERS:
        seconds = best_of(3, hasher, pieces)
        one[name] = seconds
        rate = total / seconds / 2**20
        print(f"{name:{WIDTH}} one thread: {seconds:.2f} CPU s, {rate:.0f} MiB/s")
    for name, _ in HASHERS[1:]:
        print(f"{name} / hashlib speed: {one['hashlib'] / one[name]:.2f}x")

    for name, hasher in HASHERS:
        seconds, cpus = two_threads(hasher, pieces)
        print(
            f"{name:{WIDTH}} two threads at once: {seconds:.2f} s wall, {cpus:.2f} CPUs busy, "
            f"{seconds / one[name]:.2f}x one thread's CPU time"
        )

    block = os.urandom(256 * 2**20)
    updates: list[tuple[str, Callable[[bytes], object]]] = [
        ("hashlib", hashlib.md5(usedforsecurity=False).update),
        ("rehashes", rehashes.PyMd5().update),
    ]
    if opensslmd5.load() is not None:
        updates.append(("OpenSSL ctypes", new_engine(name="openssl").update))
    for name, update in updates:
        count = main_thread_progress(update, block)
        print(f"{name:{WIDTH}} main thread counted to {count} during one 256 MiB update")

    for name, hasher in HASHERS:
        worst, mean = asyncio.run(loop_stall(hasher, pieces))
        print(
            f"{name:{WIDTH}} 1 ms timer lateness while a thread hashes: "
            f"worst {worst * 1000:.1f} ms, mean {mean * 1000:.2f} ms"
        )


if __name__ == "__main__":
    main()
