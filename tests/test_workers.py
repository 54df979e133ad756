"""`--workers N`: several processes on one port, supervised."""

from __future__ import annotations

import asyncio
import os
import re
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from .conftest import (
    ServerProcess,
    eventually,
    field_part,
    file_part,
    http_post_head,
    multipart_body,
    random_bytes,
    stop_server,
    upload_across_sigterm,
)

Spawn = Callable[..., Awaitable[ServerProcess]]


def worker_pids(server: ServerProcess) -> list[int]:
    """The supervisor's worker processes (not multiprocessing's resource tracker)."""
    children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text().split()
    return [
        int(pid) for pid in children if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


def alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists()


def started(server: ServerProcess) -> bool:
    return any("worker processes" in line for line in server.log)


async def test_workers_share_the_port_and_the_storage(spawn: Spawn, tmp_path: Path) -> None:
    storage = tmp_path / "data"
    (storage / ".tmp").mkdir(parents=True)
    (storage / ".tmp" / "crash-leftover.part").write_bytes(b"x")
    server = await spawn("--storage", str(storage), "--workers", "2")
    await eventually(lambda: started(server))
    assert any(
        re.search(r"listening on http://127\.0\.0\.1:\d+/ with 2 worker processes", line)
        for line in server.log
    )
    assert not (storage / ".tmp" / "crash-leftover.part").exists()
    await eventually(lambda: len(worker_pids(server)) == 2)
    prefixes = set()
    names = []
    for i in range(40):
        # A new connection each time, so the kernel may pick either worker.
        async with aiohttp.ClientSession() as session:
            form = aiohttp.FormData()
            form.add_field("conversationId", "1")
            form.add_field("file", random_bytes(2000, seed=i), filename="w.bin")
            async with session.post(server.url + "/files", data=form) as response:
                assert response.status == 200
                names.append((await response.json())["name"])
                prefixes.add(response.headers["X-Request-Id"][:12])
    assert len(prefixes) == 2, "both workers answered"
    assert len(set(names)) == 40  # unique names across processes too
    async with aiohttp.ClientSession() as session:
        for i, name in enumerate(names):
            async with session.get(
                server.url + "/files/download", params={"filename": name}
            ) as response:
                assert await response.read() == random_bytes(2000, seed=i)
    workers = worker_pids(server)
    assert await stop_server(server) == 0
    assert not any(alive(pid) for pid in workers)


async def test_a_dead_worker_is_replaced(spawn: Spawn, tmp_path: Path) -> None:
    server = await spawn("--storage", str(tmp_path / "data"), "--workers", "2")
    await eventually(lambda: started(server))
    victim = worker_pids(server)[0]
    os.kill(victim, signal.SIGKILL)
    await eventually(lambda: any("starting another" in line for line in server.log), 15)
    await eventually(
        lambda: len(worker_pids(server)) == 2 and victim not in worker_pids(server), 15
    )
    await eventually(lambda: sum("listening on" in line for line in server.log) >= 4, 15)
    async with aiohttp.ClientSession() as session, session.get(server.url + "/healthz") as r:
        assert r.status == 200
    assert await stop_server(server) == 0


async def test_workers_drain_on_sigterm(spawn: Spawn, tmp_path: Path) -> None:
    storage = tmp_path / "data"
    server = await spawn("--storage", str(storage), "--workers", "2", "--shutdown-timeout", "10")
    await eventually(lambda: started(server))
    content = random_bytes(2_000_000)
    body = multipart_body("b", [field_part("conversationId", "7"), file_part(content, "d.bin")])
    request = http_post_head("/files", "b", len(body)) + body
    # A few chunks in: the temporary file exists by then.
    answer = await upload_across_sigterm(server, storage, request, 1_200_000)
    assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
    assert await asyncio.wait_for(server.process.wait(), 30) == 0
    assert (storage / "7_d.bin").read_bytes() == content
