"""The harness: start the servers, make the fixtures, run each scenario against each
server (warm-up first, then rounds with the servers in rotating order), and measure.

Every run is measured the same way: uploads of earlier runs are deleted (small ones
set aside, see `Bench.clean`) and the page cache written back (`sync`) first, so no
run pays for another's writeback; idle RSS is sampled; then server CPU (the whole
process tree, from /proc), client CPU (this process and the tools it ran, from
getrusage) and the server's RSS every ~50 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import itertools
import os
import resource
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from . import load
from .lineup import make_servers
from .procstat import RssSampler, cpu_seconds, idle_rss, usage
from .profiling import SpyProfile, find_py_spy, recording
from .profiling import summarize as summarize_profile
from .scenarios import GiB, NotAvailable, Profile, Scenario, build_scenarios
from .servers import (
    REPO_ROOT,
    Server,
    ServerFailed,
    StreamproxyRawPut,
)
from .system import (
    describe_machine,
    dirty_bytes,
    ensure_programs,
    git_revision,
    load_average,
    raise_file_limit,
)

RUN_TIMEOUT = 600.0
SYNC_THRESHOLD = 32 * 1024 * 1024
SET_ASIDE_BELOW = 1024 * 1024  # uploaded files smaller than this are moved, not deleted


@dataclass
class RunRecord:
    """One run of one scenario against one server; round 0 is the discarded warm-up."""

    scenario: str
    server: str
    round: int
    status: str  # "ok", "not available: ...", "failed: ..."
    seconds: float = 0.0
    payload_bytes: int = 0
    requests: int = 0
    errors: int = 0
    error_sample: str = ""
    server_cpu: float = 0.0
    client_cpu: float = 0.0
    rss_idle: int = 0
    rss_peak: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def rate(self, unit: str) -> float:
        if self.seconds <= 0:
            return 0.0
        if unit == "req/s":
            return self.requests / self.seconds
        return self.payload_bytes / self.seconds / 1e6

    @property
    def rss_above_idle(self) -> int:
        return max(0, self.rss_peak - self.rss_idle)

    @property
    def server_cpu_per_gib(self) -> float | None:
        return self.server_cpu / (self.payload_bytes / GiB) if self.payload_bytes else None


@dataclass
class Options:
    profile: Profile
    scenarios: list[str] = field(default_factory=list)  # fnmatch patterns; empty: all
    servers: list[str] = field(default_factory=lambda: ["nginx", "streamproxy", "fastapi"])
    rounds: int | None = None
    warmup: bool = True
    streamproxy_args: list[str] = field(default_factory=list)
    tmpdir: str | None = None
    note: str = ""
    quiet: bool = False
    install: bool = True  # apt-get install nginx-light and wrk when root and missing
    py_spy: list[str] = field(default_factory=list)  # scenarios to profile after their rounds


@dataclass
class SuiteResult:
    profile: str
    settings: dict[str, Any]  # the profile's sizes and counts
    rounds: int
    warmup: bool
    started: str
    finished: str
    elapsed_s: float
    revision: str
    note: str
    load_before: str
    load_after: str
    machine: dict[str, str]
    streamproxy_args: list[str]
    scenarios: list[dict[str, Any]]
    servers: list[str]
    unavailable_servers: dict[str, str]
    records: list[RunRecord]
    complete: bool  # every scenario against every server: fit for RESULTS.md
    profiles: list[dict[str, Any]] = field(default_factory=list)  # profiling.SpyProfile's fields

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SuiteResult:
        records = [RunRecord(**record) for record in data.pop("records")]
        return cls(records=records, **data)


def client_cpu() -> float:
    """CPU seconds of this process (the load generator) and of the tools it has reaped."""
    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        rusage = resource.getrusage(who)
        total += rusage.ru_utime + rusage.ru_stime
    return total


class Bench:
    """What scenarios see: the profile, the running servers, a client session, fixtures."""

    def __init__(
        self,
        profile: Profile,
        servers: dict[str, Server],
        session: aiohttp.ClientSession,
        programs: dict[str, str | None],
    ) -> None:
        self.profile = profile
        self.servers = servers
        self.session = session
        self.programs = programs
        self.fixtures: dict[str, dict[str, str]] = {}
        self._set_aside = itertools.count()  # unique names for the files set aside
        self._counter = itertools.count()

    def unique(self, prefix: str) -> str:
        return f"{prefix}{next(self._counter)}"

    def fixture(self, server: Server, which: str) -> str:
        return self.fixtures[server.name][which]

    def wrk(self) -> str:
        path = self.programs.get("wrk")
        if not path:
            raise NotAvailable("wrk is not installed (Debian package wrk)")
        return path

    def cpu_of(self, server: Server) -> float:
        return cpu_seconds(server.pids())

    async def make_fixtures(self, server: Server) -> None:
        """The files downloads read, uploaded through the server itself, then checked."""
        if isinstance(server, StreamproxyRawPut):
            self.fixtures[server.name] = self.fixtures[server.of.name]  # the same process
            return
        if not server.serves_downloads:  # the floor: one upload shows it works
            await load.upload(self.session, server, "probe.bin", self.profile.small)
            self.fixtures[server.name] = {}
            return
        names = {}
        for which, size in (("big", self.profile.big), ("small", self.profile.small)):
            names[which] = await load.upload(self.session, server, f"fixture-{which}.bin", size)
        url = server.download_url(names["small"])
        await load.download(self.session, url, self.profile.small)
        length = self.profile.range_length
        headers = {"Range": f"bytes={length}-{2 * length - 1}"}
        async with self.session.get(server.download_url(names["big"]), headers=headers) as r:
            body = await r.read()
            if r.status != 206 or len(body) != length:
                raise ServerFailed(f"{server.name}: a range GET gave {r.status}, {len(body)} bytes")
        self.fixtures[server.name] = names

    async def clean(self, server: Server) -> None:
        """Clear what earlier runs uploaded (not the fixtures), and write back the cache.

        Large files are deleted, so their page cache is reused. Small ones are moved
        aside until the suite ends: on ext4 without a journal (this VM's root file
        system; RESULTS.md's Machine table says which) each new inode is allocated
        past every inode deleted in the last minute, looking each one up, so deleting
        the 15,000 files of a 5 KB run cost every file the next run created ~1 ms
        of kernel CPU (`recently_deleted` in `find_inode_bit`), whichever server it was.
        """
        keep = set(self.fixtures.get(server.name, {}).values())
        aside = server.workdir / "set-aside"

        def remove() -> None:
            aside.mkdir(exist_ok=True)
            for path in server.uploaded_files():
                if path.name.removesuffix(".json") in keep:
                    continue
                with contextlib.suppress(FileNotFoundError):
                    if path.stat().st_size < SET_ASIDE_BELOW:
                        path.rename(aside / f"{next(self._set_aside)}-{path.name}")
                    else:
                        path.unlink()
            # Deleting drops most dirty pages; write back the rest. (A sync costs most of
            # a second on this VM even when nothing is dirty, so only when it matters.)
            if dirty_bytes() > SYNC_THRESHOLD:
                os.sync()

        await asyncio.to_thread(remove)


def select(scenarios: list[Scenario], patterns: list[str]) -> list[Scenario]:
    if not patterns:
        return scenarios
    chosen = [s for s in scenarios if any(fnmatch.fnmatch(s.key, p) for p in patterns)]
    if not chosen:
        known = ", ".join(s.key for s in scenarios)
        raise SystemExit(f"no scenario matches {' '.join(patterns)}; known: {known}")
    return chosen


class Harness:
    def __init__(self, options: Options) -> None:
        self.options = options
        self.profile = options.profile
        self.rounds = options.rounds or self.profile.rounds
        self.records: list[RunRecord] = []
        self.profiles: list[SpyProfile] = []
        self.workdir = Path()

    def say(self, text: str) -> None:
        if not self.options.quiet:
            stamp = datetime.now().strftime("%H:%M:%S")
            print(f"[{stamp}] {text}", file=sys.stderr, flush=True)

    async def measure(
        self, bench: Bench, scenario: Scenario, server: Server, round_: int
    ) -> RunRecord:
        record = RunRecord(scenario.key, server.name, round_, "ok")
        try:
            server.check_alive()
            await bench.clean(server)
            pids = server.pids()
            record.rss_idle = await asyncio.to_thread(idle_rss, pids)
            hashing_before = await server.hashing_seconds(bench.session)
            before, client_before = usage(pids), client_cpu()
            with RssSampler(pids) as sampler:
                outcome = await asyncio.wait_for(scenario.run(bench, server), RUN_TIMEOUT)
            after = usage(pids)
            record.server_cpu = after.cpu_seconds - before.cpu_seconds
            faults = after.minor_faults - before.minor_faults
            record.client_cpu = client_cpu() - client_before
            record.rss_peak = sampler.peak
            record.seconds = outcome.seconds
            record.payload_bytes = outcome.payload_bytes
            record.requests = outcome.requests
            record.errors = outcome.errors
            record.error_sample = outcome.error_sample
            record.extra = outcome.extra
            if outcome.requests:
                record.extra["faults_per_request"] = faults / outcome.requests
            if hashing_before is not None:
                hashing = await server.hashing_seconds(bench.session)
                record.extra.update(load.hashing_figures(outcome, (hashing or 0) - hashing_before))
            if outcome.requests == 0:
                record.status = f"failed: {outcome.error_sample or 'nothing transferred'}"
        except NotAvailable as error:
            record.status = f"not available: {error}"
        except (Exception, TimeoutError) as error:  # one broken run must not end the suite
            record.status = f"failed: {type(error).__name__}: {error}"[:400]
        self.report_run(scenario, record)
        self.records.append(record)
        return record

    def report_run(self, scenario: Scenario, record: RunRecord) -> None:
        label = "warm-up" if record.round == 0 else f"round {record.round}"
        head = f"{scenario.key:<16} {record.server:<11} {label:<8}"
        if record.status != "ok":
            self.say(f"{head} {record.status}")
            return
        errors = f", {record.errors} errors ({record.error_sample})" if record.errors else ""
        self.say(
            f"{head} {record.rate(scenario.unit):9.1f} {scenario.unit}  "
            f"server cpu {record.server_cpu:5.2f}s  client cpu {record.client_cpu:5.2f}s  "
            f"rss +{record.rss_above_idle / 2**20:.1f} MiB{errors}"
        )

    async def run_scenario(self, bench: Bench, scenario: Scenario) -> None:
        targets = [bench.servers[name] for name in scenario.servers if name in bench.servers]
        # Round 0, the warm-up, goes in the listed order like round 1.
        for round_ in range(0 if self.options.warmup else 1, self.rounds + 1):
            shift = max(0, round_ - 1) % max(1, len(targets))
            for server in targets[shift:] + targets[:shift]:
                record = await self.measure(bench, scenario, server, round_)
                if record.status.startswith("not available"):
                    targets.remove(server)
        if any(fnmatch.fnmatch(scenario.key, p) for p in self.options.py_spy):
            for server in targets:
                if server.name.startswith("streamproxy"):
                    await self.profile_run(bench, scenario, server)

    async def profile_run(self, bench: Bench, scenario: Scenario, server: Server) -> None:
        """One more run of `scenario` under py-spy, outside the rounds."""
        program = find_py_spy()
        if program is None:
            self.say("py-spy is not installed (pip install -e '.[bench]')")
            return
        output = self.workdir / f"py-spy-{scenario.key}-{server.name}"
        subprocesses = len(server.pids()) > 1
        try:
            await bench.clean(server)
            async with recording(program, server.pid, output, subprocesses=subprocesses) as paths:
                outcome = await asyncio.wait_for(scenario.run(bench, server), RUN_TIMEOUT)
            cpu_raw, wall_raw = [await asyncio.to_thread(path.read_text) for path in paths]
        except (Exception, TimeoutError) as error:
            self.say(f"{scenario.key:<16} {server.name:<11} py-spy failed: {error}"[:300])
            return
        seconds = max(outcome.seconds, 1e-9)
        if scenario.unit == "req/s":
            rate = f"{outcome.requests / seconds:,.0f} req/s"
        else:
            rate = f"{outcome.payload_bytes / seconds / 1e6:,.0f} MB/s"
        profile = summarize_profile(cpu_raw, wall_raw, scenario.key, server.name, rate, seconds)
        self.profiles.append(profile)
        self.say("\n".join(profile.to_text()))

    async def run(self) -> SuiteResult:
        options = self.options
        started_at = datetime.now(UTC)
        started = time.perf_counter()
        programs = ensure_programs(["nginx", "wrk"], install=options.install)
        machine = describe_machine(programs, Path(options.tmpdir or tempfile.gettempdir()))
        load_before = load_average()
        scenarios = select(build_scenarios(self.profile), options.scenarios)
        raise_file_limit()
        workdir = Path(tempfile.mkdtemp(prefix="streamproxy-bench-", dir=options.tmpdir))
        self.workdir = workdir
        servers, unavailable = make_servers(
            options.servers, workdir, programs, options.streamproxy_args
        )
        running: dict[str, Server] = {}
        try:
            async with load.new_session() as session:
                bench = Bench(self.profile, running, session, programs)
                for server in servers:
                    self.say(f"starting {server.name} on {server.base_url}")
                    try:
                        await server.start()
                        await bench.make_fixtures(server)
                    except (ServerFailed, load.UploadFailed, aiohttp.ClientError) as error:
                        unavailable[server.name] = f"could not start: {error}"[:400]
                        self.say(f"{server.name}: {unavailable[server.name]}")
                        await server.stop()
                        continue
                    running[server.name] = server
                for scenario in scenarios:
                    self.say(f"-- {scenario.key}: {scenario.title}")
                    await self.run_scenario(bench, scenario)
        finally:
            for server in servers:
                await server.stop()
            await asyncio.to_thread(shutil.rmtree, workdir, ignore_errors=True)
        complete = (
            not options.scenarios
            and not unavailable
            and {"nginx", "streamproxy", "fastapi"} <= set(options.servers)
            and not options.streamproxy_args
        )
        return SuiteResult(
            profile=self.profile.name,
            settings=asdict(self.profile),
            rounds=self.rounds,
            warmup=options.warmup,
            started=started_at.strftime("%Y-%m-%d %H:%M UTC"),
            finished=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            elapsed_s=time.perf_counter() - started,
            revision=git_revision(REPO_ROOT),
            note=options.note,
            load_before=load_before,
            load_after=load_average(),
            machine=machine,
            streamproxy_args=options.streamproxy_args,
            scenarios=[
                {
                    "key": s.key,
                    "title": s.title,
                    "unit": s.unit,
                    "servers": list(s.servers),
                    "concurrency": s.concurrency,
                    "size": s.size,
                    "group": s.group,
                }
                for s in scenarios
            ],
            servers=list(running),
            unavailable_servers=unavailable,
            records=self.records,
            complete=complete,
            profiles=[asdict(profile) for profile in self.profiles],
        )
