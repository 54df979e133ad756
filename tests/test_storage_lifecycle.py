"""Storage lifecycles on both storages: close waits without blocking the event loop,
and an abort that is cancelled finishes its clean-up and then lets the cancellation through."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from streamproxy.runtime.settings import Settings
from streamproxy.storage import open_storage
from streamproxy.storage.local import LocalStorage
from streamproxy.storage.localwrite import HELD_BACK

from .conftest import eventually
from .s3support import BUCKET

SLOW_JOB = 30.0  # seconds a held job waits at most for its release


@pytest.fixture(params=["local", "s3"])
async def storage(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """A started storage of each kind (S3 on moto's server), closed by the test itself."""
    if request.param == "local":
        settings = Settings(storage=str(tmp_path / "data"))
    else:
        moto = request.getfixturevalue("moto_server")
        prefix = f"lifecycle-{time.time_ns()}"
        settings = Settings(storage=f"s3://{BUCKET}/{prefix}", s3_endpoint=moto.endpoint)
    opened = open_storage(settings)
    await opened.start()
    yield opened
    await opened.close()  # a second close is harmless


async def test_close_waits_for_a_slow_job_without_blocking_the_loop(storage: Any) -> None:
    """A job held on its worker thread: close waits for it, and the event loop runs on
    meanwhile (a close that blocked the loop would give it back only after the job)."""
    release = threading.Event()
    order: list[str] = []

    def slow_job() -> None:
        release.wait(SLOW_JOB)
        order.append("job")

    slow = storage.run_blocking(slow_job)
    closing = asyncio.ensure_future(storage.close())
    closing.add_done_callback(lambda _: order.append("closed"))
    for _ in range(100):  # close gets going, as far as it goes before the job
        await asyncio.sleep(0)
    assert order == [] and not slow.done()  # this coroutine ran while the job was held
    release.set()
    await closing
    assert order == ["job", "closed"]  # close returned once the job had finished


class SlowObserver:
    """An observer that holds the worker thread until released, like a stalled disk."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()

    def __call__(self, piece: Any) -> None:
        self.entered.set()
        self.release.wait(10)


async def cancel_mid_cleanup(abort: asyncio.Future[Any], observer: SlowObserver) -> None:
    """Cancel `abort` while it waits for the thread; it must wait on, then raise CancelledError."""
    await asyncio.sleep(0.1)
    abort.cancel()
    await asyncio.sleep(0.1)
    assert not abort.done(), "the clean-up stopped waiting for the worker thread"
    observer.release.set()
    with pytest.raises(asyncio.CancelledError):
        await abort
    assert abort.cancelled()


@pytest.mark.parametrize("storage", ["local"], indirect=True)
async def test_local_abort_cancelled_finishes_cleanup_then_raises(storage: LocalStorage) -> None:
    observer = SlowObserver()
    writer = await storage.create_writer(observer)
    written = writer.write([b"x" * (HELD_BACK + 1)])  # big enough to go to a worker thread
    await asyncio.to_thread(observer.entered.wait, 10)
    await cancel_mid_cleanup(asyncio.ensure_future(writer.abort()), observer)
    await written  # the write in flight finished into a file that was still open
    assert list((storage.root / ".tmp").iterdir()) == []


@pytest.mark.parametrize("storage", ["s3"], indirect=True)
async def test_s3_discard_cancelled_finishes_cleanup_then_raises(storage: Any) -> None:
    observer = SlowObserver()
    writer = await storage.create_writer(observer)
    written = asyncio.ensure_future(writer.write([b"x" * 1000]))
    await asyncio.to_thread(observer.entered.wait, 10)
    before = asyncio.all_tasks()
    aborting = asyncio.ensure_future(writer.abort())
    # The clean-up runs as a task of its own (the storage's close waits for it); that
    # task is what a shutting-down loop cancels.
    await eventually(lambda: bool(asyncio.all_tasks() - before - {aborting}))
    (discard,) = asyncio.all_tasks() - before - {aborting}
    await cancel_mid_cleanup(discard, observer)
    with pytest.raises(asyncio.CancelledError):
        await aborting
    await written
