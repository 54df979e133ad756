"""`--workers N`: several processes on one port, supervised."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

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


def worker_pid(server: ServerProcess, index: int) -> int:
    """The pid of worker `index` as its latest start-up line names it."""
    pids = [
        int(match.group(1))
        for line in server.log
        if (match := re.search(rf"worker {index} \(pid (\d+)\) listening", line))
    ]
    assert pids, f"worker {index} never said it listens"
    return pids[-1]


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes of a process group: a server and everything it started,
    also those it lost track of, which the parent's children list would no longer show."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


async def upload_on_new_connection(url: str, data: bytes, name: str) -> str:
    """Upload over a connection of its own (the kernel may pick any worker); the request id."""
    async with aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        form.add_field("conversationId", "3")
        form.add_field("file", data, filename=name)
        async with session.post(url + "/files", data=form) as response:
            assert response.status == 200, await response.text()
            return response.headers["X-Request-Id"]


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        assert response.status == 200
        text = await response.text()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


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


async def test_a_dead_worker_is_replaced_and_its_replacement_serves_and_sweeps(
    spawn: Spawn, tmp_path: Path
) -> None:
    """Worker 0 is the one that sweeps: when it dies, its replacement must take uploads
    (its request ids are seen beside the other worker's) and keep sweeping."""
    storage = tmp_path / "data"
    server = await spawn("--storage", str(storage), "--workers", "2", "--stale-after", "1s")
    await eventually(lambda: started(server))
    victim = worker_pid(server, 0)
    survivor = worker_pid(server, 1)
    os.kill(victim, signal.SIGKILL)
    await eventually(lambda: any("worker 0 exited" in line for line in server.log), 15)
    await eventually(lambda: worker_pid(server, 0) != victim, 15)
    assert set(worker_pids(server)) == {worker_pid(server, 0), survivor}
    # Both workers answer uploads, the new one included.
    prefixes: set[str] = set()
    for i in range(60):
        request_id = await upload_on_new_connection(server.url, b"r%d" % i, f"r{i}.bin")
        prefixes.add(request_id[:12])
        if len(prefixes) == 2:
            break
    assert len(prefixes) == 2, "the replacement worker never answered"
    # The sweep runs in the new worker 0: an abandoned temporary goes, a fresh one stays.
    old_tmp, fresh_tmp = storage / ".tmp" / "abandoned.part", storage / ".tmp" / "fresh.part"
    old_tmp.write_bytes(b"half")
    long_ago = time.time() - 3600
    os.utime(old_tmp, (long_ago, long_ago))
    fresh_tmp.write_bytes(b"new")
    await eventually(lambda: not old_tmp.exists(), 15)
    assert fresh_tmp.exists()
    samples = await scrape(server.url)
    assert samples[("streamproxy_retention_deleted_total", (("what", "staged"),))] == 1
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


async def test_sigterm_during_the_restart_pause_stops_every_worker(
    spawn: Spawn, tmp_path: Path
) -> None:
    """On main the replacement started after the signal and the supervisor waited for it
    for ever."""
    server = await spawn("--storage", str(tmp_path / "data"), "--workers", "2")
    await eventually(lambda: started(server))
    await eventually(lambda: len(worker_pids(server)) == 2)
    os.kill(worker_pids(server)[0], signal.SIGKILL)
    await eventually(lambda: any("starting another" in line for line in server.log), 15)
    server.process.terminate()  # inside the second before the replacement starts
    assert await asyncio.wait_for(server.process.wait(), 30) == 0
    await eventually(lambda: group_members(server.pid) == [], 15)
    assert sum("listening on" in line for line in server.log) == 3  # no replacement started


async def test_sigint_to_the_supervisor_alone_stops_every_worker(
    spawn: Spawn, tmp_path: Path
) -> None:
    """Ctrl-C reaches the whole group; a SIGINT to the supervisor alone (kill -INT) only
    set a flag on main, and the workers served on."""
    server = await spawn("--storage", str(tmp_path / "data"), "--workers", "2")
    await eventually(lambda: started(server))
    await eventually(lambda: len(worker_pids(server)) == 2)
    os.kill(server.pid, signal.SIGINT)
    assert await asyncio.wait_for(server.process.wait(), 30) == 0
    await eventually(lambda: group_members(server.pid) == [], 15)
    assert sum("shutting down" in line for line in server.log) >= 2  # both workers drained


async def test_metrics_show_the_whole_service_across_workers(spawn: Spawn, tmp_path: Path) -> None:
    """On main each scrape showed the one worker that answered it."""
    server = await spawn("--storage", str(tmp_path / "data"), "--workers", "2")
    await eventually(lambda: started(server))
    sizes = [1000 + 37 * i for i in range(20)]
    prefixes = {
        (await upload_on_new_connection(server.url, random_bytes(n, seed=n), f"m{n}.bin"))[:12]
        for n in sizes
    }
    assert len(prefixes) == 2, "both workers took uploads"
    upload_200 = (
        "streamproxy_request_duration_seconds_count",
        (("method", "POST"), ("route", "upload"), ("status", "200")),
    )
    for _ in range(8):  # new connections: scrapes land on either worker
        samples = await scrape(server.url)
        assert samples[("streamproxy_received_bytes_total", (("kind", "upload"),))] == sum(sizes)
        assert samples[upload_200] == len(sizes)
        assert samples[("streamproxy_transfers_in_flight", (("kind", "upload"),))] == 0
        for index in ("0", "1"):
            assert samples[("process_resident_memory_bytes", (("worker", index),))] > 0
            assert ("process_cpu_seconds_total", (("worker", index),)) in samples
    # A worker's counts outlive it: the totals stay after it is killed and replaced.
    victim = worker_pid(server, 1)
    os.kill(victim, signal.SIGKILL)
    await eventually(lambda: worker_pid(server, 1) != victim, 15)
    samples = await scrape(server.url)
    assert samples[("streamproxy_received_bytes_total", (("kind", "upload"),))] == sum(sizes)
    assert await stop_server(server) == 0
