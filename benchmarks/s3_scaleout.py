"""Scaling out on S3: 5 MB uploads through nginx to 1, 2 and 3 instances on one bucket.

The deployment is the test suite's (tests/cluster.py): `streamproxy serve`
processes on one `s3://` prefix behind nginx (round robin, request bodies
streamed through unbuffered), moto's S3 server behind them, and between the
instances and moto a proxy that logs every S3 request (tests/s3log.py), so the
S3 requests an upload costs are counted on the wire, by operation.

Each configuration gets a warm-up, then rounds of UPLOADS uploads at
CONCURRENCY; each round measures the wall time, the CPU seconds of every
process tree (the instances summed, nginx, moto, and this process: the load
client and the logging proxy), and the S3 requests by operation. Uploads are
deleted between rounds (moto keeps objects in memory). Then, on one instance,
the S3 requests of other operations: a download of a 5 MB file, an upload of
several parts, a listing, a deletion.

On two cores shared by the client, nginx, moto and the instances, the
throughput cannot grow with the instances; what this measures is the cost per
upload and per GiB, and whether it stays flat as instances are added.

    .venv/bin/python -m benchmarks.s3_scaleout [--instances 1 2 3] [--uploads 128]
        [--rounds 2] [--write]      # --write: the section of benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from tests.cluster import Cluster, nginx_program
from tests.s3log import S3Log
from tests.s3support import BUCKET, FAKE_AWS, MotoServer

from . import load
from .procstat import RssSampler, cpu_seconds, idle_rss, process_tree
from .servers import REPO_ROOT, Server
from .system import describe_machine, git_revision, load_average, package_version

GiB = 1024**3
RESULTS = REPO_ROOT / "benchmarks" / "RESULTS.md"
BEGIN = "<!-- s3_scaleout: begin (written by python -m benchmarks.s3_scaleout --write) -->"
END = "<!-- s3_scaleout: end -->"
HISTORY = "## History"
SERVE_ARGS = ("--max-size", "64M")  # log level info: the cluster reads the start-up line
KEY = "bench-key"


class Front(Server):
    """nginx in front of the cluster, as the load generator sees a server."""

    name = "nginx-front"

    def __init__(self, base_url: str) -> None:  # the cluster runs the process
        self.base_url = base_url


@dataclass
class Round:
    instances: int
    round: int
    seconds: float
    uploads: int
    errors: int
    payload_bytes: int
    cpu: dict[str, float]  # process group -> CPU seconds in the round
    instance_cpu: list[float]  # each instance's share
    rss_above_idle: int  # the instances' summed RSS: peak in the round minus idle before
    s3: dict[str, int]  # operation -> requests in the round

    @property
    def gib(self) -> float:
        return self.payload_bytes / GiB

    @property
    def mb_per_s(self) -> float:
        return self.payload_bytes / 1e6 / self.seconds


@dataclass
class Suite:
    started: str
    revision: str
    machine: dict[str, str]
    size: int
    concurrency: int
    uploads: int
    load_before: str
    rounds: list[Round] = field(default_factory=list)
    probes: dict[str, dict[str, int]] = field(default_factory=dict)  # what -> operation counts
    finished: str = ""


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_by_group(cluster: Cluster, moto: MotoServer) -> tuple[dict[str, float], list[float]]:
    per_instance = [cpu_seconds(process_tree(pid)) for pid in cluster.pids()]
    nginx = cluster.nginx_pid
    groups = {
        "instances": sum(per_instance),
        "nginx": cpu_seconds(process_tree(nginx)) if nginx else 0.0,
        "moto": cpu_seconds([moto.process.pid]),
        "client+proxy": own_cpu(),
    }
    return groups, per_instance


def empty_prefix(moto: MotoServer, prefix: str) -> None:
    """Delete what the uploads left, straight at moto (not counted)."""
    client = moto.client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
        keys: list[Any] = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys, "Quiet": True})


async def measured_round(
    cluster: Cluster, moto: MotoServer, log: S3Log, args: argparse.Namespace, number: int
) -> Round:
    session = load.new_session()
    session.headers.update({"Authorization": f"Bearer {KEY}"})
    try:
        since = len(log.entries)
        pids = [pid for root in cluster.pids() for pid in process_tree(root)]
        idle = idle_rss(pids)
        before, before_each = cpu_by_group(cluster, moto)
        with RssSampler(pids) as rss:
            outcome = await load.upload_many(
                session,
                Front(cluster.nginx_url),
                count=args.uploads,
                concurrency=args.concurrency,
                size=args.size,
                prefix=f"r{number}",
            )
        after, after_each = cpu_by_group(cluster, moto)
    finally:
        await session.close()
    if outcome.errors:
        print(f"  {outcome.errors} errors, e.g. {outcome.error_sample}", file=sys.stderr)
    return Round(
        instances=cluster.size,
        round=number,
        seconds=outcome.seconds,
        uploads=outcome.requests,
        errors=outcome.errors,
        payload_bytes=outcome.payload_bytes,
        cpu={group: after[group] - before[group] for group in after},
        instance_cpu=[b - a for a, b in zip(before_each, after_each, strict=True)],
        rss_above_idle=rss.peak - idle,
        s3=dict(log.counts(since)),
    )


async def probes(cluster: Cluster, log: S3Log, size: int) -> dict[str, dict[str, int]]:
    """S3 requests of one of each other operation, through one instance."""
    url = cluster.instances[0].url
    found: dict[str, dict[str, int]] = {}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def counted(what: str, method: str, path: str, **kwargs: Any) -> Any:
            since = len(log.entries)
            async with session.request(method, url + path, **kwargs) as response:
                body = await response.read()
                assert response.status < 300, f"{what}: {response.status} {body[:200]!r}"
            await asyncio.sleep(0.5)  # clean-ups the service runs after answering
            found[what] = dict(log.counts(since))
            return json.loads(body) if body.startswith(b"{") else None

        def form(data: bytes) -> aiohttp.FormData:
            built = aiohttp.FormData()
            built.add_field("conversationId", "probe")
            built.add_field("file", data, filename="p.bin", content_type="application/octet-stream")
            return built

        small = os.urandom(size)
        stored = await counted(f"upload {size / 1e6:g} MB", "POST", "/files", data=form(small))
        big = os.urandom(40_000_000)
        await counted("upload 40 MB (8 MiB parts)", "POST", "/files", data=form(big))
        name = {"filename": stored["name"]}
        await counted(f"download {size / 1e6:g} MB", "GET", "/files/download", params=name)
        await counted("stat", "GET", "/files/stat", params=name)
        listing = {"conversationId": "probe"}
        await counted(
            "first listing of a prefix (makes the cursor key)", "GET", "/files", params=listing
        )
        await counted("list a conversation (2 files)", "GET", "/files", params=listing)
        await counted("delete a file", "DELETE", "/files", params=name)
        await counted("erase a conversation (1 file)", "DELETE", "/files", params=listing)
    return found


async def run(args: argparse.Namespace, moto: MotoServer, workdir: Path) -> Suite:
    log = await S3Log(moto.port).start()
    suite = Suite(
        started=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        revision=git_revision(REPO_ROOT),
        machine={
            **describe_machine({"nginx": nginx_program()}),
            "moto": package_version("moto"),
        },
        size=args.size,
        concurrency=args.concurrency,
        uploads=args.uploads,
        load_before=load_average(),
    )
    try:
        for count in args.instances:
            prefix = f"scaleout-{count}/"
            cluster = Cluster(
                workdir / f"cluster-{count}",
                f"s3://{BUCKET}/{prefix}",
                log.endpoint,
                size=count,
                serve_args=(*SERVE_ARGS, "--api-key", KEY),
            )
            await cluster.start()
            try:
                print(f"{count} instance(s): warm-up", file=sys.stderr)
                warm = argparse.Namespace(**{**vars(args), "uploads": args.concurrency})
                await measured_round(cluster, moto, log, warm, 0)
                await asyncio.to_thread(empty_prefix, moto, prefix)
                for number in range(1, args.rounds + 1):
                    result = await measured_round(cluster, moto, log, args, number)
                    suite.rounds.append(result)
                    print(
                        f"  round {number}: {result.mb_per_s:.0f} MB/s, instances "
                        f"{result.cpu['instances'] / result.gib:.2f} CPU s/GiB, "
                        f"S3 {sum(result.s3.values()) / max(result.uploads, 1):.2f} req/upload",
                        file=sys.stderr,
                    )
                    await asyncio.to_thread(empty_prefix, moto, prefix)
                if count == args.instances[0]:
                    suite.probes = await probes(cluster, log, args.size)
                    await asyncio.to_thread(empty_prefix, moto, prefix)
            finally:
                await cluster.stop()
    finally:
        await log.close()
    suite.finished = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return suite


def per_upload(counts: dict[str, int], uploads: int) -> str:
    parts = [f"{op} {n / uploads:.2f}" for op, n in sorted(counts.items(), key=lambda i: -i[1])]
    return ", ".join(parts)


def render(suite: Suite) -> str:
    """The RESULTS.md section: one row per instance count (medians over rounds)."""
    lines = [
        BEGIN,
        "## Scale-out on S3: 5 MB uploads through nginx to 1, 2 and 3 instances",
        "",
        f"`python -m benchmarks.s3_scaleout --write`, {suite.started}, commit {suite.revision}; "
        f"{suite.uploads} uploads of {suite.size:,} bytes at {suite.concurrency} concurrent per "
        "round, medians over the rounds after a warm-up. Instances are `streamproxy serve` on "
        "one `s3://` prefix of moto's S3 server (in memory), behind nginx (round robin, "
        "`proxy_request_buffering off`); every S3 request passes a logging proxy and is "
        "counted by operation. CPU from /proc (process trees); 'client+proxy' is the "
        "benchmark's own process (the aiohttp load client and the logging proxy). Everything "
        f"shares the machine's 2 cores (load average before: {suite.load_before}), so MB/s "
        "cannot grow with instances here (on a machine shared with other jobs, more "
        "processes only win a bigger share of it): the figures to read are the costs per "
        "upload and whether they stay flat. RSS: the instances' summed resident memory, "
        "the worst round's peak above idle, divided by the uploads in flight (a file "
        "smaller than the 8 MiB part is held whole until its one PutObject). Access log "
        "on (log level info).",
        "",
        "| instances | median MB/s (min-max) | uploads/s | instances CPU s/GiB | per instance "
        "CPU s (spread) | nginx CPU s/GiB | moto CPU s/GiB | client+proxy CPU s/GiB | "
        "RSS above idle per upload in flight, MiB | S3 requests per upload | errors |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for count in sorted({r.instances for r in suite.rounds}):
        rounds = [r for r in suite.rounds if r.instances == count]

        def med(values: list[float]) -> float:
            return statistics.median(values)

        rates = [r.mb_per_s for r in rounds]
        per_gib = {g: med([r.cpu[g] / r.gib for r in rounds]) for g in rounds[0].cpu}
        spread = " / ".join(f"{med([r.instance_cpu[i] for r in rounds]):.2f}" for i in range(count))
        s3: Counter[str] = Counter()
        for r in rounds:
            s3.update(r.s3)
        uploads = sum(r.uploads for r in rounds)
        lines.append(
            f"| {count} | **{med(rates):.0f}** ({min(rates):.0f}-{max(rates):.0f}) "
            f"| {med([r.uploads / r.seconds for r in rounds]):.1f} "
            f"| **{per_gib['instances']:.2f}** | {spread} | {per_gib['nginx']:.2f} "
            f"| {per_gib['moto']:.2f} | {per_gib['client+proxy']:.2f} "
            f"| {max(r.rss_above_idle for r in rounds) / suite.concurrency / 2**20:.1f} "
            f"| {sum(s3.values()) / uploads:.2f} ({per_upload(dict(s3), uploads)}) "
            f"| {sum(r.errors for r in rounds)} |"
        )
    lines += ["", "S3 requests of one operation through one instance (measured, same run):", ""]
    lines += ["| operation | S3 requests |", "|---|---|"]
    for what, counts in suite.probes.items():
        detail = ", ".join(f"{op} {n}" for op, n in sorted(counts.items(), key=lambda i: -i[1]))
        lines.append(f"| {what} | {sum(counts.values())}: {detail} |")
    lines += ["", "What it means at scale: [docs/SCALING.md](../docs/SCALING.md).", END, ""]
    return "\n".join(lines)


def write_section(section: str) -> None:
    """Replace this benchmark's section of RESULTS.md, or put it before the History."""
    text = RESULTS.read_text()
    if BEGIN in text and END in text:
        head, _, rest = text.partition(BEGIN)
        _, _, tail = rest.partition(END)
        text = head + section.rstrip("\n") + tail
    elif HISTORY in text:
        head, _, tail = text.partition(HISTORY)
        text = head + section + "\n" + HISTORY + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--uploads", type=int, default=128, help="per round (default 128)")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--size", type=int, default=5_000_000, help="bytes (default 5 MB)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    args = parser.parse_args()
    os.environ.update(FAKE_AWS)
    out = REPO_ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="s3-scaleout-") as temp:
        workdir = Path(temp)
        with MotoServer.running(workdir / "moto.log") as moto:
            started = time.perf_counter()
            suite = asyncio.run(run(args, moto, workdir))
    raw = out / "s3_scaleout.json"
    raw.write_text(json.dumps(asdict(suite), indent=1))
    section = render(suite)
    print(section)
    print(f"({time.perf_counter() - started:.0f} s; raw figures in {raw})", file=sys.stderr)
    if args.write:
        write_section(section)


if __name__ == "__main__":
    main()
