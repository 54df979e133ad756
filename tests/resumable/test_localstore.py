"""The local uploads area: durable acknowledged offsets, a lock across processes, and a
writer killed with SIGKILL mid-append that the next request continues after."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import multiprocessing
import os
import signal
import time
from multiprocessing.connection import Connection
from pathlib import Path

import pytest

from streamproxy.resumable import problems
from streamproxy.resumable.hashstate import ResumableMD5
from streamproxy.resumable.localstore import STALE_STOP, UPLOADS_DIR, UploadArea
from streamproxy.resumable.localupload import LocalUploadStore
from streamproxy.resumable.state import HEAD_SIZE, Protocol, Status, UploadRecord, new_id
from streamproxy.resumable.takeover import AppendStop
from streamproxy.storage.local import LocalStorage

CAP = 10 * 2**20
DAY = 86400.0
SPAWN = multiprocessing.get_context("spawn")


def prepared(root: Path) -> UploadArea:
    area = UploadArea(root)
    area.prepare(time.time())
    return area


def new_upload(area: UploadArea, length: int | None, now: float = 0.0) -> UploadRecord:
    record = UploadRecord.create(
        protocol=Protocol.TUS,
        now=now,
        lifetime=DAY,
        md5_state=ResumableMD5().to_bytes(),
        max_size=CAP,
        length=length,
        metadata={"conversationId": "c1"},
    )
    area.create(record)
    return record


def append(area: UploadArea, upload_id: str, data: bytes, now: float = 1.0) -> UploadRecord:
    """One request's append as the routes will do it: lock, check, write, hash, acknowledge."""
    with area.locked(upload_id) as lock:
        stored = area.read(upload_id)
        record = stored.check_append(stored.offset, now, max_size=CAP)
        md5 = ResumableMD5.from_bytes(record.md5_state)
        with area.appender(lock, record) as appender:
            appender.write(data)
            md5.update(data)
            done = record.appended(
                len(data), data[:HEAD_SIZE], md5.to_bytes(), now=now, lifetime=DAY
            )
            appender.acknowledge(done)
        return done


def test_appends_are_stored_in_order_and_the_md5_continues(tmp_path: Path) -> None:
    area = prepared(tmp_path)
    data = os.urandom(300_000)
    record = new_upload(area, len(data))
    for start in range(0, len(data), 70_001):
        record = append(area, record.id, data[start : start + 70_001])
    assert area.read(record.id) == record and record.reached_length
    assert (tmp_path / UPLOADS_DIR / record.id / "data").read_bytes() == data
    assert ResumableMD5.from_bytes(record.md5_state).hexdigest() == hashlib.md5(data).hexdigest()
    assert not list((tmp_path / UPLOADS_DIR).glob(".new-*"))


def test_a_discarded_chunk_leaves_offset_and_bytes_as_they_were(tmp_path: Path) -> None:
    area = prepared(tmp_path)
    record = new_upload(area, None)
    record = append(area, record.id, b"kept")
    with area.locked(record.id) as lock, area.appender(lock, record) as appender:
        appender.write(b"checksum did not match")
        appender.discard()
        appender.write(b"+ok")
        appender.acknowledge(record.appended(3, b"", record.md5_state, now=2.0, lifetime=DAY))
    assert (area.dir / record.id / "data").read_bytes() == b"kept+ok"
    assert area.read(record.id).offset == 7


def test_acknowledge_refuses_a_record_that_does_not_match_the_bytes(tmp_path: Path) -> None:
    area = prepared(tmp_path)
    record = new_upload(area, None)
    with area.locked(record.id) as lock, area.appender(lock, record) as appender:
        appender.write(b"abc")
        with pytest.raises(ValueError, match="does not follow"):
            appender.acknowledge(record.appended(2, b"ab", b"", now=1.0, lifetime=DAY))
    assert area.read(record.id).offset == 0


def test_lock_is_exclusive_also_within_one_process(tmp_path: Path) -> None:
    area = prepared(tmp_path)
    record = new_upload(area, 10)
    first = area.lock(record.id)
    with pytest.raises(problems.Busy) as busy:
        area.lock(record.id)
    assert busy.value.status == 409
    first.close()
    area.lock(record.id).close()


def _try_lock(root: str, upload_id: str, results: Connection, go: Connection) -> None:
    area = UploadArea(Path(root))
    try:
        area.lock(upload_id)
        results.send("locked")
    except problems.Busy:
        results.send("busy")
    go.recv()  # the parent has released its lock
    with area.locked(upload_id):
        results.send("locked")


def test_two_processes_cannot_hold_one_uploads_lock(tmp_path: Path) -> None:
    area = prepared(tmp_path)
    record = new_upload(area, 10)
    results_in, results_out = SPAWN.Pipe(duplex=False)
    go_in, go_out = SPAWN.Pipe(duplex=False)
    lock = area.lock(record.id)
    child = SPAWN.Process(target=_try_lock, args=(str(tmp_path), record.id, results_out, go_in))
    child.start()
    try:
        assert results_in.poll(30) and results_in.recv() == "busy"
        lock.close()
        go_out.send("go")
        assert results_in.poll(30) and results_in.recv() == "locked"
    finally:
        child.join(30)
    assert child.exitcode == 0


def _append_then_hang(
    root: str, upload_id: str, acked: bytes, extra: bytes, ready: Connection
) -> None:
    """Acknowledge `acked`, write `extra` without acknowledging, say so, and wait to die."""
    area = UploadArea(Path(root))
    append(area, upload_id, acked)
    lock = area.lock(upload_id)
    appender = area.appender(lock, area.read(upload_id))
    appender.write(extra)
    ready.send("mid-append")
    time.sleep(60)


def test_sigkilled_writer_leaves_the_acknowledged_offset_and_the_next_append_continues(
    tmp_path: Path,
) -> None:
    area = prepared(tmp_path)
    data = os.urandom(200_000)
    record = new_upload(area, len(data))
    acked, unacked = data[:80_000], data[80_000:150_000]
    ready_in, ready_out = SPAWN.Pipe(duplex=False)
    writer = SPAWN.Process(
        target=_append_then_hang, args=(str(tmp_path), record.id, acked, unacked, ready_out)
    )
    writer.start()
    try:
        assert ready_in.poll(30) and ready_in.recv() == "mid-append"
        with pytest.raises(problems.Busy):
            area.lock(record.id)  # the writer is still inside
        data_file = area.dir / record.id / "data"
        assert data_file.stat().st_size == 150_000  # bytes the server never acknowledged
    finally:
        os.kill(writer.pid or 0, signal.SIGKILL)
        writer.join(30)
    assert writer.exitcode == -signal.SIGKILL

    resumed = area.read(record.id)
    assert resumed.offset == 80_000 and resumed.status is Status.RECEIVING
    # At once (the kernel dropped the dead writer's lock), and shorter than the tail the
    # dead writer left: the tail must be cut, not overwritten in part.
    append(area, record.id, data[80_000:100_000])
    assert data_file.read_bytes() == data[:100_000]
    finished = append(area, record.id, data[100_000:])
    assert data_file.read_bytes() == data
    assert finished.reached_length
    assert ResumableMD5.from_bytes(finished.md5_state).hexdigest() == (
        hashlib.md5(data).hexdigest()
    )


def test_cancel_removes_everything_and_later_requests_get_404(tmp_path: Path) -> None:
    area = prepared(tmp_path)
    record = new_upload(area, 10)
    append(area, record.id, b"12345")
    with area.locked(record.id) as lock:
        area.remove(lock)
    assert list((tmp_path / UPLOADS_DIR).iterdir()) == []
    for attempt in (area.read, area.lock):
        with pytest.raises(problems.NotFound):
            attempt(record.id)
    with pytest.raises(problems.NotFound):
        area.write_info(record)  # a request that read the record before the removal
    assert list((tmp_path / UPLOADS_DIR).iterdir()) == []


@pytest.mark.parametrize("bad", ["../../etc", ".new-x", "a" * 22 + "/..", ""])
def test_ids_that_are_not_ours_never_reach_the_file_system(tmp_path: Path, bad: str) -> None:
    area = prepared(tmp_path)
    for attempt in (area.read, area.lock):
        with pytest.raises(problems.NotFound):
            attempt(bad)


def test_expired_lists_old_cancelled_and_unreadable_uploads(tmp_path: Path) -> None:
    area = prepared(tmp_path)
    old = new_upload(area, 10, now=0.0)
    young = new_upload(area, 10, now=DAY)
    cancelled = new_upload(area, 10, now=DAY)
    area.write_info(cancelled.cancelled())
    broken = new_upload(area, 10, now=DAY)
    (area.dir / broken.id / "info").write_bytes(b"{")
    assert sorted(area.expired(now=DAY + 1)) == sorted([old.id, cancelled.id, broken.id])
    assert young.id not in area.expired(now=DAY + 1)
    assert young.id in area.expired(now=2 * DAY)


def test_prepare_drops_only_stale_unfinished_creations(tmp_path: Path) -> None:
    area = prepared(tmp_path)
    stale, fresh = area.dir / f".new-{new_id()}", area.dir / f".new-{new_id()}"
    for directory in (stale, fresh):
        directory.mkdir()
        (directory / "data").write_bytes(b"x")
    os.utime(stale, (1000.0, 1000.0))
    area.prepare(now=time.time())
    assert not stale.exists() and fresh.exists()


def test_creating_an_existing_id_fails_and_leaves_the_first(tmp_path: Path) -> None:
    area = prepared(tmp_path)
    record = new_upload(area, 10)
    append(area, record.id, b"abc")
    with pytest.raises(OSError):
        area.create(record)
    assert area.read(record.id).offset == 3
    assert not list(area.dir.glob(".new-*"))


def test_stop_markers_share_one_directory_and_go_with_the_upload_or_the_sweep(
    tmp_path: Path,
) -> None:
    """`.uploads/.stop/<id>`: one listing tells a process which of its uploads are asked
    (only a marker touched after the holder's lock time counts); the marker goes when
    withdrawn, with its upload, and with the sweep once orphaned or untouched."""
    area = prepared(tmp_path)
    one, two = new_upload(area, 10), new_upload(area, 10)
    before = time.time() - 1
    area.ask_to_stop(one.id)
    marker = area.dir / ".stop" / one.id
    assert marker.exists() and not (area.dir / one.id / "stop").exists()
    assert area.stops_asked({one.id: before, two.id: before}) == [one.id]
    assert area.stops_asked({one.id: time.time() + 10}) == []  # left before the lock: no one's
    area.withdraw_stop(one.id)
    assert not marker.exists()

    area.ask_to_stop(one.id)
    area.ask_to_stop(two.id)
    with area.locked(one.id) as lock:
        area.remove(lock)
    assert sorted(p.name for p in (area.dir / ".stop").iterdir()) == [two.id]
    with pytest.raises(problems.NotFound):
        area.ask_to_stop(one.id)  # the upload is gone: nobody to ask

    gone = new_id()  # a removal that raced an asker, which then died: an orphan
    (area.dir / ".stop" / gone).touch()
    assert area.remove_orphans(time.time()) == 1
    assert sorted(p.name for p in (area.dir / ".stop").iterdir()) == [two.id]  # live: stays
    old = time.time() - STALE_STOP - 1
    os.utime(area.dir / ".stop" / two.id, (old, old))  # its asker died long ago
    assert area.remove_orphans(time.time()) == 1
    assert list((area.dir / ".stop").iterdir()) == []


async def test_one_look_per_tick_for_every_append_and_the_asked_one_lets_go(
    tmp_path: Path,
) -> None:
    """Many appends held in this process, one asked through its marker by another process
    (which dies before withdrawing it): the watcher's look covers them all at once, only
    the asked one is stopped, and its marker goes as it lets go."""
    storage = LocalStorage(tmp_path, fsync=False)
    await storage.start()
    store = LocalUploadStore(storage)
    other = UploadArea(tmp_path)  # another worker's view of the root
    records = [new_upload(store.area, 10) for _ in range(20)]
    asked_id = records[7].id
    looks: list[list[str]] = []
    stops_asked = store.area.stops_asked

    def look(held: dict[str, float]) -> list[str]:
        looks.append(sorted(held))
        return stops_asked(held)

    store.area.stops_asked = look  # type: ignore[method-assign]
    stops: dict[str, AppendStop] = {}
    try:
        async with contextlib.AsyncExitStack() as holding:
            for record in records:
                held = await holding.enter_async_context(store.hold(record.id))
                holding.enter_context(
                    held.stop.reading(await holding.enter_async_context(asyncio.timeout(60)))
                )
                stops[record.id] = held.stop
            looks.clear()  # from here on every append is held

            async def ask() -> None:
                """As a waiting request does (takeover.wait_for_lock): touch the marker
                again each round, until the holder is asked. (A file's mtime comes from
                the kernel's coarse clock: a touch within a few ms of the holder's lock
                time can read as before it.)"""
                while not stops[asked_id].asked():
                    await asyncio.to_thread(other.ask_to_stop, asked_id)
                    await asyncio.sleep(0.05)

            asking = asyncio.ensure_future(ask())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(60) as timeout:
                    with stops[asked_id].reading(timeout):  # woken at once when asked
                        await asyncio.sleep(60)
            await asking
            assert [upload_id for upload_id, stop in stops.items() if stop.asked()] == [asked_id]
            # Each look took every running append (the asked one until it was asked).
            assert any(asked_id in held for held in looks)
            assert all(set(stops) - {asked_id} <= set(held) for held in looks)
            assert (tmp_path / UPLOADS_DIR / ".stop" / asked_id).exists()
    finally:
        await storage.close()
    assert list((tmp_path / UPLOADS_DIR / ".stop").iterdir()) == []  # gone as it let go
