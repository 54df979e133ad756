"""Storage lifecycles on both storages: close waits without blocking the event loop,
and an abort that is cancelled finishes its clean-up and then lets the cancellation through."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path
from typing import Any

import pytest

from streamproxy.runtime.settings import Settings
from streamproxy.storage import open_storage
from streamproxy.storage.local import LocalStorage
from streamproxy.storage.localwrite import HELD_BACK

from .s3support import BUCKET

SLOW_JOB = 1.0


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


async def largest_loop_lag(work: Awaitable[Any]) -> float:
    """How long the event loop was stalled at most while `work` ran (a 10 ms ticker)."""
    loop = asyncio.get_running_loop()
    lags = [0.0]

    async def ticker() -> None:
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - before - 0.01)

    ticking = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.05)
    try:
        await work
    finally:
        ticking.cancel()
    return max(lags)


async def test_close_waits_for_a_slow_job_without_blocking_the_loop(storage: Any) -> None:
    slow = storage.run_blocking(time.sleep, SLOW_JOB)
    started = time.monotonic()
    lag = await largest_loop_lag(storage.close())
    assert time.monotonic() - started >= SLOW_JOB * 0.9  # close did wait for the job
    assert slow.done()
    assert lag < SLOW_JOB / 2, f"the event loop stalled for {lag:.2f} s"


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
    await asyncio.sleep(0.05)
    # The clean-up runs as a task of its own (the storage's close waits for it); that
    # task is what a shutting-down loop cancels.
    (discard,) = asyncio.all_tasks() - before - {aborting}
    await cancel_mid_cleanup(discard, observer)
    with pytest.raises(asyncio.CancelledError):
        await aborting
    await written
