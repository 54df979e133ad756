"""Local storage on its own: both ways of staging a file, the commit that never replaces."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import pytest

from streamproxy.storage import localstaging
from streamproxy.storage.base import (
    FileInfo,
    FileMissing,
    LocalFileSource,
    StorageError,
    now_utc,
)
from streamproxy.storage.local import LocalStorage
from streamproxy.storage.localfs import META_XATTR
from streamproxy.storage.localstaging import GroupSync, QueuedSync
from streamproxy.storage.localwrite import HELD_BACK

from .capabilities import find_program, skip_by_design
from .conftest import ServerProcess, stop_server

pytestmark = pytest.mark.local_only
Spawn = Callable[..., Awaitable[ServerProcess]]


@pytest.fixture(params=["unnamed", "named", "sidecar"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LocalStorage]:
    """Unnamed temporaries (O_TMPFILE) and metadata in an extended attribute where the
    file system has them, and the fallbacks: named temporaries, sidecar metadata files."""
    local = LocalStorage(tmp_path / "data")
    await local.start()
    if request.param == "named":
        local.staging.unnamed = False
    elif request.param == "sidecar":
        local.staging.xattrs = False
    elif not local.staging.unnamed:
        pytest.skip("this file system has no O_TMPFILE")
    if request.param != "sidecar" and not local.staging.xattrs:
        pytest.skip("this file system has no user extended attributes")
    yield local
    await local.close()


def info_for(data: bytes) -> FileInfo:
    return FileInfo(type="application/octet-stream", size=len(data),
                    etag=hashlib.md5(data).hexdigest(), created=now_utc())  # fmt: skip


async def store(storage: LocalStorage, data: bytes, names: list[str]) -> str:
    digest = hashlib.md5()
    writer = await storage.create_writer(digest.update)
    for start in range(0, len(data), 4096):
        await writer.write([data[start : start + 4096]])
    meta = await writer.commit(names, info_for(data))
    assert meta.info.etag == digest.hexdigest()
    return meta.name


def visible(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if not p.name.startswith(".")}


async def test_commit_and_read_back(storage: LocalStorage) -> None:
    data = bytes(range(256)) * 400
    name = await store(storage, data, ["a.bin"])
    async with storage.open(name) as stored:
        assert isinstance(stored, LocalFileSource)  # over 64 KiB: sent with sendfile
        assert b"".join([c async for c in stored.chunks(0, len(data))]) == data
    assert (await storage.stat(name)).info.size == len(data)
    assert list((storage.root / ".tmp").iterdir()) == []


async def test_a_taken_name_is_never_replaced(storage: LocalStorage) -> None:
    first = await store(storage, b"first", ["same", "same-2"])
    second = await store(storage, b"second", ["same", "same-2"])
    assert (first, second) == ("same", "same-2")
    assert (storage.root / "same").read_bytes() == b"first"
    # Bytes copied in by hand under a name, without metadata, are left alone too.
    (storage.root / "manual").write_bytes(b"by hand")
    third = await store(storage, b"third", ["manual", "other"])
    assert third == "other"
    assert (storage.root / "manual").read_bytes() == b"by hand"
    assert not (storage.root / ".meta" / "manual.json").exists()


def attached(path: Path) -> bytes | None:
    try:
        return os.getxattr(path, META_XATTR)
    except OSError:
        return None


async def test_metadata_goes_with_the_file(storage: LocalStorage) -> None:
    """In the file's extended attribute, durable with its bytes and no file of its own;
    in a sidecar where the file system has no attributes."""
    data = b"with its metadata"
    name = await store(storage, data, ["a.txt"])
    sidecar = storage.root / ".meta" / f"{name}.json"
    raw = attached(storage.root / name)
    if storage.staging.xattrs:
        assert raw is not None and not sidecar.exists()
    else:
        assert raw is None and sidecar.exists()
        raw = sidecar.read_bytes()
    assert FileInfo.from_json(raw).etag == hashlib.md5(data).hexdigest()
    assert (await storage.stat(name)).info.size == len(data)


async def test_both_layouts_are_read_and_expire(storage: LocalStorage) -> None:
    """Files stored with a sidecar (before attributes, or where one did not fit) stay
    readable beside attached ones; attached metadata wins over a stale sidecar; the
    retention sweep deletes both kinds and leaves files copied in by hand."""
    if not storage.staging.xattrs:
        skip_by_design("the sidecar run: both layouts are made here on an attributes run")
    storage.staging.xattrs = False
    old_style = await store(storage, b"old style", ["old"])
    storage.staging.xattrs = True
    new_style = await store(storage, b"new style", ["new"])
    stale = FileInfo(type="text/plain", size=1, etag="0" * 32, created=now_utc())
    (storage.root / ".meta" / "new.json").write_bytes(stale.to_json())
    (storage.root / "manual").write_bytes(b"by hand")
    for name, data in ((old_style, b"old style"), (new_style, b"new style")):
        async with storage.open(name) as stored:
            assert b"".join([c async for c in stored.chunks(0, len(data))]) == data
        assert (await storage.stat(name)).info.etag == hashlib.md5(data).hexdigest()
    with pytest.raises(FileMissing):
        await storage.stat("manual")
    assert await storage.delete_older_than(datetime.now(UTC) + timedelta(seconds=5)) == 2
    assert visible(storage.root) == {"manual"}
    assert list((storage.root / ".meta").iterdir()) == []


async def test_listing_deletion_and_erasure_see_both_layouts(storage: LocalStorage) -> None:
    """A conversation's files stored with attached metadata and with sidecars are listed,
    deleted and erased alike, and nothing of them is left."""
    if not storage.staging.xattrs:
        skip_by_design("the sidecar run: both layouts are made here on an attributes run")
    names = []
    for index, attach in enumerate((True, False, True, False)):
        storage.staging.xattrs = attach
        data = f"file {index}".encode()
        digest = hashlib.md5()
        writer = await storage.create_writer(digest.update)
        await writer.write([data])
        info = FileInfo(type="text/plain", size=len(data), etag=digest.hexdigest(),
                        created=now_utc(), conversation_id="c1")  # fmt: skip
        names.append((await writer.commit([f"c1_{index}.txt"], info)).name)
    storage.staging.xattrs = True
    assert {meta.name for meta in await storage.conversation("c1")} == set(names)
    await storage.delete(names[0])
    await storage.delete(names[1])
    assert await storage.delete_conversation("c1", lambda name: None) == 2
    assert visible(storage.root) == set()
    assert list((storage.root / ".meta").iterdir()) == []


async def test_racing_commits_all_survive(storage: LocalStorage) -> None:
    payloads = [bytes([i]) * 1000 for i in range(20)]
    names = await asyncio.gather(
        *(store(storage, data, ["race"] + [f"race-{j}" for j in range(25)]) for data in payloads)
    )
    assert len(set(names)) == 20
    for name, data in zip(names, payloads, strict=True):
        assert (storage.root / name).read_bytes() == data


async def test_abort_leaves_nothing(storage: LocalStorage) -> None:
    writer = await storage.create_writer(lambda chunk: None)
    await writer.write([b"half a file"])
    await writer.abort()
    await writer.abort()  # twice is harmless
    assert visible(storage.root) == set()
    assert list((storage.root / ".tmp").iterdir()) == []
    with pytest.raises(FileMissing):
        await storage.stat("anything")


def _read_only_mount_problem() -> str | None:
    if find_program("unshare") is None:
        return "needs unshare from Debian's package util-linux"
    probe = subprocess.run(
        ["unshare", "-Urm", "sh", "-c", "mount --bind /tmp /mnt && mount -o remount,bind,ro /mnt"],
        capture_output=True,
    )
    if probe.returncode != 0:
        return "needs user and mount namespaces (unshare -Urm) for a read-only bind mount"
    return None


async def test_read_only_storage_is_503_and_logged_once(spawn: Spawn, tmp_path: Path) -> None:
    """A storage directory that exists on a read-only file system: the upload is refused
    with 503 storage_unavailable and Retry-After, and the log says why, once."""
    problem = _read_only_mount_problem()
    if problem:
        pytest.skip(problem)  # a failure under CI=true (tests/capabilities.py)
    storage = tmp_path / "store"
    for directory in (storage / ".meta", storage / ".tmp"):
        directory.mkdir(parents=True)
    # The server runs in its own mount namespace, where the directory is bound read-only.
    wrapper = (
        "unshare",
        "-Urm",
        "sh",
        "-c",
        f'mount --bind "{storage}" "{storage}" && mount -o remount,bind,ro "{storage}" '
        '&& exec "$0" "$@"',
    )
    server = await spawn("--storage", str(storage), prefix=wrapper)
    async with aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        form.add_field("conversationId", "1")
        form.add_field("file", b"some bytes", filename="a.txt")
        async with session.post(server.url + "/files", data=form) as response:
            assert response.status == 503, await response.text()
            assert (await response.json())["error"] == "storage_unavailable"
            assert response.headers["Retry-After"].isdigit()
        async with session.get(server.url + "/readyz") as response:
            assert response.status == 503
    await stop_server(server)
    assert not any("Traceback" in line for line in server.log), "".join(server.log)
    upload_errors = [line for line in server.log if "POST /files" in line and "ead-only" in line]
    assert len(upload_errors) == 1, "".join(server.log)
    assert sorted(storage.rglob("*")) == [storage / ".meta", storage / ".tmp"]


def test_grouped_directory_syncs_never_report_a_sync_that_failed(tmp_path: Path) -> None:
    """Callers that share one directory fsync all return once it is done; when the fsync
    fails, every caller gets the error (none returns as if its link were durable)."""
    directory = tmp_path / "dir"
    directory.mkdir()
    group = GroupSync(directory)
    with ThreadPoolExecutor(max_workers=16) as pool:
        assert list(pool.map(lambda _: group.sync(), range(64))) == [None] * 64
        directory.rmdir()  # now every fsync of it fails
        failures = [pool.submit(group.sync) for _ in range(16)]
        for failure in failures:
            with pytest.raises(FileNotFoundError):
                failure.result()


async def test_queued_directory_syncs_report_to_every_caller_and_never_a_failed_one(
    tmp_path: Path,
) -> None:
    """Reports queued from many threads are all called once an fsync covers them; when
    the fsync fails, each queued report gets the error (none reads as a durable link)."""
    directory = tmp_path / "dir"
    directory.mkdir()
    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=16) as pool:

        def submit(call: Callable[[], None]) -> None:
            pool.submit(call)

        queued = QueuedSync(directory, submit)

        def settle(future: asyncio.Future[None], error: BaseException | None) -> None:
            if error is None:
                future.set_result(None)
            else:
                future.set_exception(error)

        def queue_many(count: int) -> list[asyncio.Future[None]]:
            futures = [loop.create_future() for _ in range(count)]
            for future in futures:

                def report(
                    error: BaseException | None, future: asyncio.Future[None] = future
                ) -> None:
                    loop.call_soon_threadsafe(settle, future, error)

                pool.submit(queued.after_next_sync, report)
            return futures

        await asyncio.gather(*queue_many(64))
        directory.rmdir()  # now every fsync of it fails
        outcomes = await asyncio.gather(*queue_many(16), return_exceptions=True)
        assert all(isinstance(outcome, FileNotFoundError) for outcome in outcomes), outcomes


async def test_a_commit_whose_directory_fsync_fails_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit answers only once the directory's fsync covers its link: when that
    fsync fails, the commit fails (a 500), it never reads as durable."""
    storage = LocalStorage(tmp_path / "data")
    await storage.start()
    if not (storage.staging.xattrs and storage.staging.fsync):
        await storage.close()
        pytest.skip("the metadata goes to sidecars here")

    def failing(path: Path) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(localstaging, "fsync_directory", failing)
    info = FileInfo("text/plain", 2, hashlib.md5(b"ok").hexdigest(), now_utc())
    try:
        writer = await storage.create_writer(lambda piece: None)
        await writer.write([b"ok"])
        with pytest.raises(StorageError, match="saving the file failed"):
            await writer.commit(["a.txt"], info)
        await writer.abort()
    finally:
        await storage.close()


async def test_a_batch_is_written_while_it_is_hashed(tmp_path: Path) -> None:
    """Hashing and writing run on two threads: a batch's bytes reach the file while the
    observer still reads them, and its write counts as done only once both are."""
    storage = LocalStorage(tmp_path / "data")
    await storage.start()
    storage.staging.unnamed = False  # a named temporary, to watch it grow
    hashing = threading.Event()
    go_on = threading.Event()

    def slow_observer(piece: object) -> None:
        hashing.set()
        go_on.wait(30)

    data = b"x" * (HELD_BACK + 1)
    try:
        writer = await storage.create_writer(slow_observer)
        done = writer.write([data])
        deadline = time.monotonic() + 10
        while [p.stat().st_size for p in (storage.root / ".tmp").iterdir()] != [len(data)]:
            assert time.monotonic() < deadline, "the write waited for the hashing"
            await asyncio.sleep(0.01)
        assert hashing.is_set() and not done.done()  # the batch is still being read
        go_on.set()
        await done
        await writer.abort()
    finally:
        go_on.set()
        await storage.close()
    assert list((storage.root / ".tmp").iterdir()) == []
