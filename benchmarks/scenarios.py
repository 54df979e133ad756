"""The scenarios of issue 5, and the two profiles that size them (full and quick).

A scenario is a coroutine that runs one measured transfer pattern against one server
and returns an `Outcome`; the harness wraps it with warm-up, rounds, CPU and memory
measurement. Sizes come from the profile, so the quick run exercises every code path
of the full one with less data.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from . import load
from .load import Outcome
from .servers import CONVERSATION_ID, REPO_ROOT, Server

if TYPE_CHECKING:
    from .harness import Bench

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
SERVERS = ("nginx", "streamproxy", "fastapi")
# Scenarios of many requests at once also run streamproxy with `--workers 2`.
WITH_WORKERS = (*SERVERS, "streamproxy-2w")
# The uploads issue 13 grades also run the rows that isolate costs in the same run:
# streamproxy without fsync, and the raw-body PUT beside nginx's PUT.
ISOLATING = ("streamproxy-raw", "streamproxy-nofsync")
# The aiohttp floor (benchmarks/peer_floor.py): the bound of the 5 KB upload target, and
# what an aiohttp application reaches at 5 MB x 64.
FLOOR = ("floor",)
TRICKLE_SETTLE = 1.0  # seconds between the slow uploads being connected and the fast one


class NotAvailable(Exception):
    """The scenario cannot run against this server here (a route or a tool is missing)."""


@dataclass(frozen=True)
class Profile:
    """How big and how long: `full` for RESULTS.md, `quick` to check the plumbing."""

    name: str
    rounds: int
    big: int  # the "1 GiB" transfers
    medium: int = 5_000_000  # "5 MB"
    small: int = 5_000  # "5 KB"
    range_length: int = MiB
    # concurrency -> how many 5 MB uploads one run makes
    medium_uploads: dict[int, int] = field(default_factory=dict)
    # single-stream upload sizes for RSS against file size (the big upload adds a point)
    ladder_sizes: tuple[int, ...] = ()
    ladder_bytes: int = 256 * MiB  # each ladder run uploads about this much, one at a time
    wrk_seconds: int = 3
    trickle_count: int = 500
    trickle_rate: int = 64 * KiB


FULL = Profile(
    name="full",
    rounds=3,
    big=GiB,
    # 256 at 256 concurrent is one wave: every upload in flight at once, which is
    # what the memory per transfer needs; more waves would not fit in 15 minutes.
    medium_uploads={1: 16, 16: 64, 64: 192, 256: 256},
    ladder_sizes=(MiB, 16 * MiB, 128 * MiB),
    ladder_bytes=128 * MiB,
    wrk_seconds=3,
)

QUICK = Profile(
    name="quick",
    rounds=1,
    big=128 * MiB,
    medium=1_000_000,  # the "5 MB" scenarios with 1 MB files: 256 in flight all the same
    medium_uploads={64: 64, 256: 256},
    ladder_sizes=(MiB, 16 * MiB),
    ladder_bytes=32 * MiB,
    wrk_seconds=1,
    trickle_count=250,
)


Runner = Callable[["Bench", Server], Awaitable[Outcome]]


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    unit: str  # "MB/s" or "req/s"
    run: Runner
    servers: tuple[str, ...] = SERVERS
    concurrency: int = 1
    size: int = 0
    group: str = ""


def human_size(size: int) -> str:
    units = (("GiB", GiB), ("MiB", MiB), ("KiB", KiB), ("MB", 1_000_000), ("KB", 1000))
    for unit, factor in units:
        if size >= factor and size % factor == 0:
            return f"{size // factor} {unit}"
    return f"{size} B"


def size_key(size: int) -> str:
    return human_size(size).replace(" ", "").lower().replace("ib", "").replace("b", "")


# -- the scenarios ----------------------------------------------------------------------


def uploads(size: int, count: int, concurrency: int) -> Runner:
    async def run(bench: Bench, server: Server) -> Outcome:
        return await load.upload_many(
            bench.session,
            server,
            count=count,
            concurrency=concurrency,
            size=size,
            prefix=bench.unique("up"),
        )

    return run


async def _wrk(
    bench: Bench, server: Server, script: str, connections: int, payload: int
) -> Outcome:
    """One wrk run of the profile's length against `server`."""
    return await load.run_wrk(
        bench.wrk(),
        server.base_url,
        script,
        connections=connections,
        seconds=bench.profile.wrk_seconds,
        payload_per_request=payload,
    )


def wrk_uploads(size: int, connections: int) -> Runner:
    async def run(bench: Bench, server: Server) -> Outcome:
        script = load.wrk_upload_script(server, size, bench.unique("wrk"))
        return await _wrk(bench, server, script, connections, size)

    return run


async def big_download(bench: Bench, server: Server) -> Outcome:
    url = server.download_url(bench.fixture(server, "big"))
    started = time.perf_counter()
    received = await asyncio.to_thread(load.download_raw, url, bench.profile.big)
    return Outcome(seconds=time.perf_counter() - started, payload_bytes=received, requests=1)


def wrk_downloads(which: str, connections: int, length: int | None = None) -> Runner:
    """GETs of a fixture: the whole small file, or random `length`-byte ranges of the big one."""

    async def run(bench: Bench, server: Server) -> Outcome:
        url = server.download_url(bench.fixture(server, which))
        path = url.removeprefix(server.base_url)
        if length is None:
            script = load.wrk_get_script(path)
            payload = bench.profile.small
        else:
            script = load.wrk_range_script(path, bench.profile.big, length)
            payload = length
        return await _wrk(bench, server, script, connections, payload)

    return run


async def import_from_url(bench: Bench, server: Server) -> Outcome:
    """`POST /files/from-url` of the big file, served by the nginx instance."""
    nginx = bench.servers.get("nginx")
    if nginx is None:
        raise NotAvailable("the source, nginx, is not running")
    source = nginx.download_url(bench.fixture(nginx, "big"))
    body = {"sourceUrl": source, "channel": "web", "conversationId": CONVERSATION_ID}
    source_cpu = bench.cpu_of(nginx)
    started = time.perf_counter()
    async with bench.session.post(server.base_url + "/files/from-url", json=body) as response:
        text = await response.text()
    seconds = time.perf_counter() - started
    if response.status in (404, 405):
        # The contract has no 404 for this route: it is not built yet.
        raise NotAvailable(f"POST /files/from-url answered {response.status} (route not built yet)")
    if response.status != 200:
        if "source_not_allowed" in text:
            raise NotAvailable(f"the service refused the loopback source: {text[:200]}")
        raise load.UploadFailed(f"POST /files/from-url: {response.status} {text[:300]}")
    outcome = Outcome(seconds=seconds, payload_bytes=bench.profile.big, requests=1)
    outcome.extra["source_cpu_s"] = bench.cpu_of(nginx) - source_cpu
    return outcome


async def slow_clients(bench: Bench, server: Server) -> Outcome:
    """One fast big upload while N uploads trickle in another process. (The rate alone
    is the big-upload scenario's, in the same run: measuring it again here would cost
    a minute of the full run's fifteen.)"""
    profile = bench.profile
    size = profile.big
    url = server.upload_url("NAME").replace("NAME", "{name}")
    command = [
        sys.executable,
        "-m",
        "benchmarks.trickle",
        "--url",
        url,
        "--count",
        str(profile.trickle_count),
        "--rate",
        str(profile.trickle_rate),
    ]
    if server.multipart:
        command.append("--multipart")
    trickle = await asyncio.create_subprocess_exec(
        *command,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=REPO_ROOT,
    )
    assert trickle.stdin is not None and trickle.stdout is not None
    try:
        ready = (await asyncio.wait_for(trickle.stdout.readline(), 90)).decode().strip()
        await asyncio.sleep(TRICKLE_SETTLE)  # every slow upload under way, not just connected
        started = time.perf_counter()
        await load.upload(bench.session, server, bench.unique("fast") + ".bin", size)
        seconds = time.perf_counter() - started
    finally:
        trickle.stdin.close()
        output, _ = await asyncio.wait_for(trickle.communicate(), 60)
        with contextlib.suppress(ProcessLookupError):
            trickle.kill()
    sent, trickle_seconds = 0, 1.0
    for line in output.decode().splitlines():
        if line.startswith("sent "):
            sent, trickle_seconds = int(line.split()[1]), float(line.split()[2])
    outcome = Outcome(seconds=seconds, payload_bytes=size, requests=1)
    outcome.extra.update(
        {
            "with_trickle_MBps": size / seconds / 1e6,
            # what the slow uploads got through while the fast one ran (and the settle time)
            "trickle_MBps": sent / max(trickle_seconds, 1e-9) / 1e6,
            "trickle_ready": float(ready.split()[1]) if ready.startswith("ready") else 0.0,
        }
    )
    return outcome


def build_scenarios(profile: Profile) -> list[Scenario]:
    big = human_size(profile.big)
    medium = human_size(profile.medium)
    small = human_size(profile.small)
    scenarios = [
        Scenario(
            "upload-big",
            f"one {big} upload",
            "MB/s",
            uploads(profile.big, 1, 1),
            servers=(*SERVERS, *ISOLATING),
            size=profile.big,
            group="upload",
        ),
    ]
    # The size ladder right after the big upload, before any concurrency: a Python
    # process keeps the heap it grew, so RSS against file size is only readable on a
    # process that has not yet held hundreds of uploads at once.
    for size in profile.ladder_sizes:
        count = max(1, profile.ladder_bytes // size)
        scenarios.append(
            Scenario(
                f"upload-{size_key(size)}",
                f"{count} x {human_size(size)} uploads, one at a time",
                "MB/s",
                uploads(size, count, 1),
                servers=(*SERVERS, *ISOLATING) if size == MiB else SERVERS,
                size=size,
                group="upload-size",
            )
        )
    for concurrency, count in sorted(profile.medium_uploads.items()):
        scenarios.append(
            Scenario(
                f"upload-5m-c{concurrency}",
                f"{count} x {medium} uploads, {concurrency} concurrent",
                "MB/s",
                uploads(profile.medium, count, concurrency),
                concurrency=concurrency,
                size=profile.medium,
                servers=(*WITH_WORKERS, *ISOLATING, *FLOOR) if concurrency == 64 else SERVERS,
                group="upload-concurrency",
            )
        )
    scenarios += [
        Scenario(
            "upload-5k-c64",
            f"{small} uploads, 64 concurrent (wrk)",
            "req/s",
            wrk_uploads(profile.small, 64),
            concurrency=64,
            size=profile.small,
            servers=(*WITH_WORKERS, *ISOLATING, *FLOOR),
            group="upload",
        ),
        Scenario(
            "download-big",
            f"one {big} download",
            "MB/s",
            big_download,
            size=profile.big,
            group="download",
        ),
        Scenario(
            "range-1m-c16",
            f"{human_size(profile.range_length)} range GETs, 16 concurrent (wrk)",
            "MB/s",
            wrk_downloads("big", 16, profile.range_length),
            concurrency=16,
            size=profile.range_length,
            servers=WITH_WORKERS,
            group="download",
        ),
        Scenario(
            "download-5k-c64",
            f"{small} downloads, 64 concurrent (wrk)",
            "req/s",
            wrk_downloads("small", 64),
            concurrency=64,
            size=profile.small,
            servers=WITH_WORKERS,
            group="download",
        ),
        Scenario(
            "import-big",
            f"{big} import from URL (source: the nginx instance)",
            "MB/s",
            import_from_url,
            servers=("streamproxy",),
            size=profile.big,
            group="import",
        ),
        Scenario(
            "slow-clients",
            f"one {big} upload while {profile.trickle_count} uploads trickle at "
            f"{profile.trickle_rate // KiB} KiB/s",
            "MB/s",
            slow_clients,
            size=profile.big,
            concurrency=profile.trickle_count,
            group="slow-clients",
        ),
    ]
    return scenarios
