"""Resumable uploads from `MediaClient` and `streamproxy upload`, against a live service.

Real faults: connections cut mid-PATCH by a TCP proxy, a CLI process killed with
SIGKILL mid-upload and run again, a file changed between runs. The server's own
view of each request (the recorder) shows what was sent, and HEAD its offset.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import re
import signal
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from tqdm import tqdm

from streamproxy.client import MediaClient, MediaError, ResumableOptions

from ..conftest import Service, ServiceFactory, eventually, md5, random_bytes
from ..cutproxy import CuttingProxy
from .conftest import Recorder, run_cli

pytestmark = pytest.mark.local_only  # the server's resumable uploads are on local storage

KiB = 1024
ROOT = Path(__file__).resolve().parents[2]
TUS = {"Tus-Resumable": "1.0.0"}


def fast(state_dir: Path, **changes: Any) -> ResumableOptions:
    """Small chunks and short waits, so a test sees many PATCHes and retries quickly."""
    settings: dict[str, Any] = {
        "threshold": 1,
        "chunk_size": 256 * KiB,
        "first_delay": 0.05,
        "max_delay": 0.2,
        "state_dir": state_dir,
    }
    return ResumableOptions(**(settings | changes))


PATCHES_UNDER_WAY = web.AppKey("patches_under_way", list[int])


def slow_patches(seconds: float, under_way: list[int]) -> Any:
    """Each PATCH waits before it is handled: a slow uplink, so a kill lands mid-upload.
    `under_way[0]` counts the PATCHes between arrival and answer."""

    @web.middleware
    async def slow(request: web.Request, handler: Any) -> web.StreamResponse:
        if request.method != "PATCH":
            return await handler(request)  # type: ignore[no-any-return]
        under_way[0] += 1
        try:
            await asyncio.sleep(seconds)
            response: web.StreamResponse = await handler(request)
            return response
        finally:
            under_way[0] -= 1

    return slow


async def start(
    start_service: ServiceFactory, *, patch_delay: float = 0.0, **settings: Any
) -> tuple[Any, Recorder]:
    recorder = Recorder()

    def prepare(app: web.Application) -> None:
        recorder.install(app)
        if patch_delay:
            app[PATCHES_UNDER_WAY] = [0]
            app.middlewares.append(slow_patches(patch_delay, app[PATCHES_UNDER_WAY]))

    service = await start_service(prepare=prepare, **settings)
    return service, recorder


def patches(recorder: Recorder, status: int | None = None) -> list[tuple[int, int]]:
    """(Upload-Offset, Content-Length) of every PATCH the service answered (with `status`)."""
    seen = []
    for exchange in recorder.exchanges:
        if exchange.method == "PATCH" and status in (None, exchange.status):
            offset = int(exchange.headers.get("Upload-Offset", "-1"))
            seen.append((offset, int(exchange.headers.get("Content-Length", "-1"))))
    return seen


SEEN = ("Range", "If-Range", "Authorization", "Content-Length", "Upload-Offset")


@pytest.fixture(autouse=True)
def record_offsets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The recorder also keeps `Upload-Offset`."""
    from . import conftest

    monkeypatch.setattr(conftest, "SEEN_HEADERS", SEEN)


async def test_a_large_file_goes_in_patches_and_matches_post_files(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    service, recorder = await start(start_service)
    data = random_bytes(1_000_000, seed=3)
    path = tmp_path / "clip.bin"
    path.write_bytes(data)
    state = tmp_path / "state"
    seen: list[tuple[int, int | None]] = []
    options = fast(state, threshold=500_000)
    async with MediaClient(service.url, resumable=options) as media:
        result = await media.upload(
            path, conversation_id="42", progress=lambda d, t: seen.append((d, t))
        )
        small = await media.upload(b"tiny", conversation_id="42", file_name="tiny.txt")
    assert (result.name, result.size, result.etag) == ("42_clip.bin", len(data), md5(data))
    assert result.url.endswith("/files/download?filename=42_clip.bin")
    assert await service.fetch("42_clip.bin") == data
    assert [offset for offset, _ in patches(recorder)] == [0, 262144, 524288, 786432]
    assert seen[0] == (0, len(data)) and seen[-1] == (len(data), len(data))
    assert list(state.iterdir()) == []  # the state file goes on completion
    assert small.name == "42_tiny.txt"  # under the threshold: one POST /files
    assert len(recorder.to("/files", "POST")) == 1


async def test_a_connection_cut_mid_patch_is_resumed_from_the_servers_offset(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    service, recorder = await start(start_service)
    # Budgets of PATCH traffic (cutproxy): 1.64 MB in all, under the 3 MB the upload must
    # send, so all five cuts happen whatever the timing; each waits until the server has
    # taken in what was sent before it, so every cut PATCH leaves bytes on the server.
    taken = service.taken
    budgets = [150_000, 300_000, 90_000, 400_000, 700_000]
    proxy = CuttingProxy(service.port, cuts=budgets, taken=taken)
    before = taken()
    endpoint = await proxy.start()
    data = random_bytes(3_000_000, seed=5)
    path = tmp_path / "video.mp4"
    path.write_bytes(data)
    # A PATCH right after a cut may find the broken one still holding the upload (409,
    # tus has no take-over); on a loaded machine that can last: retries to spare.
    options = fast(tmp_path / "state", retries=40)
    try:
        async with MediaClient(endpoint, resumable=options) as media:
            result = await media.upload(path, conversation_id="7", resumable=True)
    finally:
        await proxy.close()
    assert proxy.made == 5  # every planned cut happened
    assert (result.size, result.etag) == (len(data), md5(data))
    assert await service.fetch(result.name) == data
    assert len(recorder.to("/files/uploads", "POST")) == 1  # one upload, resumed
    assert len([e for e in recorder.exchanges if e.method == "HEAD"]) >= proxy.made
    # Every byte of the file went into the server once: what the cut PATCHes left was
    # kept, and the client went on from the server's offset, sending none of it again.
    assert taken() - before == len(data)
    # The PATCHes answered 204 (a cut one is not answered; a 409 took nothing): each
    # from the server's offset, in order; the gaps between them are the cut PATCHes'.
    whole = patches(recorder, status=204)
    assert all(a + n <= b for (a, n), (b, _) in itertools.pairwise(whole))
    assert whole[-1][0] + whole[-1][1] == len(data)
    assert sum(n for _, n in whole) < len(data)


async def test_retries_give_up_when_the_network_stays_down(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    service, _ = await start(start_service)
    proxy = CuttingProxy(service.port, cuts=[200] * 40)
    endpoint = await proxy.start()
    path = tmp_path / "a.bin"
    path.write_bytes(random_bytes(600_000))
    options = fast(tmp_path / "state", retries=3)
    try:
        async with MediaClient(endpoint, resumable=options) as media:
            with pytest.raises(MediaError) as failed:
                await media.upload(path, conversation_id="1")
    finally:
        await proxy.close()
    assert failed.value.status is None
    assert failed.value.code in {"connection_failed", "interrupted"}
    assert len(list((tmp_path / "state").iterdir())) == 1  # kept for the next run


# The CLI in a process of its own, so it can be killed mid-upload.
KillRun = Callable[..., Awaitable[tuple[str, int]]]


def cli_env(state_home: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "XDG_STATE_HOME": str(state_home)}


async def head_offset(url: str) -> int:
    async with aiohttp.ClientSession() as session, session.head(url, headers=TUS) as answer:
        assert answer.status == 200
        return int(answer.headers["Upload-Offset"])


async def kill_mid_upload(server: str, path: Path, state_home: Path, at_least: int) -> str:
    """Run `streamproxy upload` and SIGKILL it once the server holds `at_least` bytes;
    the upload's URL (from the state file the killed run left)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamproxy",
        "upload",
        str(path),
        "--conversation-id=9",
        "--resumable",
        "--chunk-size=256k",
        "--server",
        server,
        env=cli_env(state_home),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    state_dir = state_home / "streamproxy" / "uploads"
    try:
        deadline = asyncio.get_running_loop().time() + 60
        while True:
            assert process.returncode is None, "the upload ended before it could be killed"
            assert asyncio.get_running_loop().time() < deadline
            files = list(state_dir.glob("*.json")) if state_dir.exists() else []
            if files:
                url = str(json.loads(files[0].read_text())["url"])
                if await head_offset(url) >= at_least:
                    break
            await asyncio.sleep(0.05)
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGKILL)
    code = await process.wait()
    assert code == -signal.SIGKILL
    return url


async def settled_offset(service: Service, url: str) -> int:
    """The offset once the server has finished with the killed run's last PATCH. One
    whose body had all arrived when the client died is appended whole (the bytes are
    the server's), even after the death: it may still be in the slow middleware, or
    its head still unread, when nothing holds a transfer slot. So: no PATCH under
    way, no transfer, and the same offset twice, longer than a PATCH's delay apart."""
    under_way = service.server.app[PATCHES_UNDER_WAY]
    offset = -1
    while True:
        await eventually(lambda: service.in_flight() == 0 and under_way[0] == 0)
        now = await head_offset(url)
        if now == offset:
            return offset
        offset = now
        await asyncio.sleep(0.5)


def bar_positions(stderr: str, total: str) -> list[str]:
    """The byte counts a tqdm bar showed (`768k/2.00M`), in order."""
    return re.findall(r"(\S+)/" + re.escape(total) + r" \[", stderr)


async def test_a_killed_cli_run_is_resumed_by_the_next_run(
    start_service: ServiceFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, recorder = await start(start_service, patch_delay=0.2)
    data = random_bytes(2 * 1024 * 1024, seed=8)
    path = tmp_path / "long.mp4"
    path.write_bytes(data)
    state_home = tmp_path / "state-home"
    url = await kill_mid_upload(service.url, path, state_home, at_least=512 * KiB)
    offset = await settled_offset(service, url)
    assert 512 * KiB <= offset < len(data)
    recorder.clear()

    monkeypatch.setenv("XDG_STATE_HOME", str(state_home))
    run = await run_cli(
        "upload", str(path), "--conversation-id=9", "--resumable", "--chunk-size=256k",
        "--progress", "--json", "--server", service.url,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    (result,) = run.json_lines()
    assert (result["name"], result["etag"]) == ("9_long.mp4", md5(data))
    assert await service.fetch("9_long.mp4") == data
    assert recorder.to("/files/uploads", "POST") == []  # no new upload: the same one went on
    second = patches(recorder, status=204)  # (a PATCH may meet the broken one's lock: 409)
    assert second[0][0] == offset  # continued at the server's offset
    assert sum(length for _, length in second) == len(data) - offset < len(data)
    shown = bar_positions(run.stderr, tqdm.format_sizeof(len(data), divisor=1024))
    assert shown[0] == tqdm.format_sizeof(offset, divisor=1024)  # the bar starts at the offset
    assert list((state_home / "streamproxy" / "uploads").iterdir()) == []


async def test_a_file_changed_since_the_killed_run_starts_again(
    start_service: ServiceFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service, recorder = await start(start_service, patch_delay=0.2)
    path = tmp_path / "draft.bin"
    path.write_bytes(random_bytes(2 * 1024 * 1024, seed=1))
    state_home = tmp_path / "state-home"
    old_url = await kill_mid_upload(service.url, path, state_home, at_least=256 * KiB)
    changed = random_bytes(2 * 1024 * 1024, seed=2)  # same size, other bytes, new mtime
    path.write_bytes(changed)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    recorder.clear()

    monkeypatch.setenv("XDG_STATE_HOME", str(state_home))
    run = await run_cli(
        "upload", str(path), "--conversation-id=9", "--resumable", "--chunk-size=1M",
        "--json", "--server", service.url,
    )  # fmt: skip
    assert run.code == 0, run.stderr
    (result,) = run.json_lines()
    assert result["etag"] == md5(changed)
    assert await service.fetch(result["name"]) == changed
    assert len(recorder.to("/files/uploads", "POST")) == 1  # a new upload
    assert [offset for offset, _ in patches(recorder)] == [0, 1024 * 1024]
    assert not any(e.path.endswith(old_url.rsplit("/", 1)[1]) for e in recorder.exchanges)


async def test_resumable_is_refused_clearly_where_the_service_has_none(
    tmp_path: Path,
) -> None:
    """An older service (no `/files/uploads`): auto mode posts, `resumable=True` says why not."""
    posted: list[int] = []

    async def files(request: web.Request) -> web.Response:
        await request.read()
        posted.append(1)
        return web.json_response(
            {"message": "ok", "name": "1_a.bin", "type": "application/octet-stream",
             "size": 4, "etag": md5(b"abcd"), "url": "http://x/files/download?filename=1_a.bin"}
        )  # fmt: skip

    app = web.Application()
    app.router.add_post("/files", files)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    path = tmp_path / "a.bin"
    path.write_bytes(b"abcd")
    try:
        async with MediaClient(f"http://127.0.0.1:{port}", resumable=fast(tmp_path)) as media:
            result = await media.upload(path, conversation_id="1")
            with pytest.raises(MediaError) as refused:
                await media.upload(path, conversation_id="1", resumable=True)
            with pytest.raises(TypeError):
                await media.upload(b"abcd", conversation_id="1", resumable=True)
    finally:
        await runner.cleanup()
    assert result.etag == md5(b"abcd") and posted == [1]
    assert (refused.value.status, refused.value.code) == (501, "not_implemented")


def busy_first(method: str, times: int) -> Any:
    """The first `times` requests of `method` on /files/uploads get 503 (a busy instance)."""
    left = times

    @web.middleware
    async def busy(request: web.Request, handler: Any) -> web.StreamResponse:
        nonlocal left
        if request.method == method and "/files/uploads" in request.path and left > 0:
            left -= 1
            return web.json_response({"error": "busy", "detail": "try later"}, status=503)
        response: web.StreamResponse = await handler(request)
        return response

    return busy


async def terminate(url: str) -> int:
    """DELETE the upload, once the server has let go of the request that broke off (409)."""
    async with aiohttp.ClientSession() as session:
        for _ in range(100):
            async with session.delete(url, headers=TUS) as answer:
                if answer.status != 409:
                    return answer.status
            await asyncio.sleep(0.05)
    raise AssertionError("the upload stayed locked")


class Stop(Exception):
    """The caller's own reason to stop an upload midway (raised from `progress`)."""


async def test_a_busy_creation_is_retried_and_a_vanished_upload_starts_again(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    recorder = Recorder()

    def prepare(app: web.Application) -> None:
        recorder.install(app)
        app.middlewares.append(busy_first("POST", 2))

    service = await start_service(prepare=prepare)
    data = random_bytes(900_000, seed=12)
    path = tmp_path / "a.bin"
    path.write_bytes(data)
    state = tmp_path / "state"

    def stop_after_first_chunk(done: int, total: int | None) -> None:
        if done >= 300_000:
            raise Stop

    async with MediaClient(service.url, resumable=fast(state)) as media:
        with pytest.raises(Stop):  # the caller's exception, not a retried network error
            await media.upload(path, conversation_id="5", progress=stop_after_first_chunk)
        (saved,) = state.iterdir()
        url = json.loads(saved.read_text())["url"]
        assert await terminate(url) == 204  # tus termination: the server forgets the upload
        result = await media.upload(path, conversation_id="5")
    assert (result.size, result.etag) == (len(data), md5(data))
    assert await service.fetch(result.name) == data
    statuses = [e.status for e in recorder.to("/files/uploads", "POST")]
    assert statuses == [503, 503, 201, 201]  # retried after 503; a new upload after the 404
    heads = [e.status for e in recorder.exchanges if e.method == "HEAD"]
    assert heads == [404]
    assert list(state.iterdir()) == []
