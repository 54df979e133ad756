"""How the pump batches a file for the writer: `--chunk-size` at first, growing with a
big file up to what `TransferSlots.batch_size` allows while few transfers run.

The writer is local storage's own; the test only records each batch's size on its
way in, and checks that the stored file is whole.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Awaitable, Iterable, Sequence
from pathlib import Path

from streamproxy.intake.mediatypes import TypePolicy
from streamproxy.intake.pump import Pump
from streamproxy.intake.transfers import FEW_TRANSFERS_BATCH, TransferSlots
from streamproxy.storage.base import FileInfo, Observer, Piece, StorageWriter, StoredMeta
from streamproxy.storage.local import LocalStorage

KiB = 1024
MiB = 1024 * KiB
PIECE = 256 * KiB


class RecordedWriter:
    """Local storage's writer, with the size of each batch it is handed noted down."""

    def __init__(self, writer: StorageWriter, batches: list[int]) -> None:
        self._writer = writer
        self._batches = batches

    def write(self, pieces: Sequence[Piece]) -> Awaitable[None]:
        self._batches.append(sum(len(piece) for piece in pieces))
        return self._writer.write(pieces)

    async def commit(self, names: Iterable[str], info: FileInfo) -> StoredMeta:
        return await self._writer.commit(names, info)

    async def abort(self) -> None:
        await self._writer.abort()


class RecordedStorage:
    def __init__(self, storage: LocalStorage) -> None:
        self._storage = storage
        self.batches: list[int] = []

    async def create_writer(self, observer: Observer) -> StorageWriter:
        writer = await self._storage.create_writer(observer)
        return RecordedWriter(writer, self.batches)


async def _pieces(data: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(data), PIECE):
        yield data[start : start + PIECE]


async def _store(tmp_path: Path, data: bytes, max_batch: int) -> list[int]:
    storage = LocalStorage(tmp_path / "data")
    await storage.start()
    recorded = RecordedStorage(storage)
    try:
        pump = Pump(
            recorded,
            max_size=len(data),
            policy=TypePolicy(),
            declared_type="application/octet-stream",
            filename="big.bin",
            chunk_size=512 * KiB,
            max_batch=max_batch,
        )
        async with pump:
            await pump.pump(_pieces(data))
            meta = await pump.commit("c1")
        assert meta.info.etag == hashlib.md5(data).hexdigest()
        assert (tmp_path / "data" / meta.name).read_bytes() == data
    finally:
        await storage.close()
    return recorded.batches


async def test_a_big_file_alone_is_batched_larger_as_it_goes(tmp_path: Path) -> None:
    batches = await _store(tmp_path, os.urandom(32 * MiB), max_batch=2 * MiB)
    assert sum(batches) == 32 * MiB
    assert batches[0] == 512 * KiB  # a small file's batches would still overlap its arrival
    assert batches == sorted(batches[:-1]) + batches[-1:]  # growing, but for the rest at the end
    assert max(batches) == 2 * MiB
    assert len(batches) < 32 * MiB // (512 * KiB) // 2


async def test_without_a_larger_allowance_every_batch_is_the_chunk_size(tmp_path: Path) -> None:
    batches = await _store(tmp_path, os.urandom(8 * MiB), max_batch=0)
    assert batches == [512 * KiB] * 16


def test_only_a_transfer_with_at_most_one_other_gets_larger_batches() -> None:
    slots = TransferSlots(limit=None)
    with slots.slot("upload"):
        assert slots.batch_size(512 * KiB) == FEW_TRANSFERS_BATCH * 512 * KiB
        with slots.slot("upload"):
            assert slots.batch_size(512 * KiB) == FEW_TRANSFERS_BATCH * 512 * KiB
            with slots.slot("download"):
                assert slots.batch_size(512 * KiB) == 512 * KiB
    assert slots.batch_size(64 * KiB) == FEW_TRANSFERS_BATCH * 64 * KiB
