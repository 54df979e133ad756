"""Scaling out on S3: 5 MB uploads through nginx to 1, 2 and 3 instances on one bucket.

The deployment is the test suite's (tests/cluster.py): `streamproxy serve`
processes on one `s3://` prefix behind nginx (round robin, request bodies
streamed through unbuffered), an object store behind them (moto's S3 server,
Ceph's RADOS Gateway, or both one after the other: s3stores.py starts them as
the tests do), and between the instances and the store a proxy that logs every
S3 request (tests/s3log.py), so the S3 requests an upload costs are counted on
the wire, by operation.

Each configuration gets a warm-up, then rounds of UPLOADS uploads at
CONCURRENCY; each round measures the wall time, the CPU seconds of every
process tree (the instances summed, nginx, the store's processes, and this
process: the load client and the logging proxy), and the S3 requests by
operation. Uploads are deleted between rounds (both stores keep objects in
memory). Then, on one instance, the S3 requests of other operations: a download
of a 5 MB file, an upload of several parts (on RGW it claims its name first),
a listing, a deletion. The counts leave out the service's background sweeps
(`sweeps`): they run on their own clock (at start-up, expired resumable uploads
every 30 s), whatever is being measured.

On two cores shared by the client, nginx, the store and the instances, the
throughput cannot grow with the instances; what this measures is the cost per
upload and per GiB, and whether it stays flat as instances are added. RGW needs
root and Debian's Ceph packages (as its tests do).

    .venv/bin/python -m benchmarks.s3_scaleout [--server moto|rgw|both]
        [--instances 1 2 3] [--uploads 128] [--rounds 2]
        [--write]    # --write (with --server both): the section of benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from streamproxy.storage.base import CLAIMS_DIR
from streamproxy.storage.s3cleanup import STAGING_DIR, UPLOADS_DIR
from tests.cluster import Cluster, nginx_program
from tests.s3log import Logged, S3Log
from tests.s3support import BUCKET, FAKE_AWS

from . import load
from .procstat import RssSampler, cpu_seconds, idle_rss, process_tree
from .s3_scaleout_report import Round, Suite, render, write_section
from .s3stores import KINDS, Store, running
from .servers import REPO_ROOT, Server
from .system import describe_machine, git_revision, load_average

SERVE_ARGS = ("--max-size", "64M")  # log level info: the cluster reads the start-up line
KEY = "bench-key"


class Front(Server):
    """nginx in front of the cluster, as the load generator sees a server."""

    name = "nginx-front"

    def __init__(self, base_url: str) -> None:  # the cluster runs the process
        self.base_url = base_url


def sweeps(cluster: Cluster) -> Callable[[Logged], bool]:
    """The service's background sweeps, to leave out of a count: their listings of the
    prefix (stale multipart uploads), of its staging objects, resumable uploads and claims.
    They run at start-up and then on a timer (`runtime.retention`), so they land in
    whichever round or probe is on the wire then; the operations measured list none
    of these (a listing of a conversation lists `PREFIX<conversation>_`)."""
    root = cluster.storage.removeprefix(f"s3://{BUCKET}/")
    listed = {root, root + STAGING_DIR, root + UPLOADS_DIR, f"{root}{CLAIMS_DIR}/"}
    listings = {"ListObjects", "ListMultipartUploads"}
    return lambda entry: entry.operation in listings and entry.prefix in listed


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def cpu_by_group(cluster: Cluster, store: Store) -> tuple[dict[str, float], list[float]]:
    per_instance = [cpu_seconds(process_tree(pid)) for pid in cluster.pids()]
    nginx = cluster.nginx_pid
    groups = {
        "instances": sum(per_instance),
        "nginx": cpu_seconds(process_tree(nginx)) if nginx else 0.0,
        "store": cpu_seconds(store.pids),
        "client+proxy": own_cpu(),
    }
    return groups, per_instance


async def measured_round(
    cluster: Cluster, store: Store, log: S3Log, args: argparse.Namespace, number: int
) -> Round:
    session = load.new_session()
    session.headers.update({"Authorization": f"Bearer {KEY}"})
    try:
        since = len(log.entries)
        pids = [pid for root in cluster.pids() for pid in process_tree(root)]
        idle = idle_rss(pids)
        load_before = load_average().split()[0]
        before, before_each = cpu_by_group(cluster, store)
        with RssSampler(pids) as rss:
            outcome = await load.upload_many(
                session,
                Front(cluster.nginx_url),
                count=args.uploads,
                concurrency=args.concurrency,
                size=args.size,
                prefix=f"r{number}",
            )
        after, after_each = cpu_by_group(cluster, store)
    finally:
        await session.close()
    if outcome.errors:
        print(f"  {outcome.errors} errors, e.g. {outcome.error_sample}", file=sys.stderr)
    return Round(
        store=store.kind,
        instances=cluster.size,
        round=number,
        seconds=outcome.seconds,
        uploads=outcome.requests,
        errors=outcome.errors,
        payload_bytes=outcome.payload_bytes,
        cpu={group: after[group] - before[group] for group in after},
        instance_cpu=[b - a for a, b in zip(before_each, after_each, strict=True)],
        rss_above_idle=rss.peak - idle,
        s3=dict(log.counts(since, ignore=sweeps(cluster))),
        load_before=load_before,
    )


async def probes(cluster: Cluster, log: S3Log, size: int, big: int) -> dict[str, dict[str, int]]:
    """S3 requests of one of each other operation, through one instance.

    The service makes an operation's requests, clean-ups included, before it answers,
    and the log has each request once its answer's status has passed: so when the
    answer is here, so are the counts. Waiting until the log has settled besides
    catches any request still on the wire rather than a sleep's guess at its time.
    """
    url = cluster.instances[0].url
    found: dict[str, dict[str, int]] = {}
    headers = {"Authorization": f"Bearer {KEY}"}
    async with aiohttp.ClientSession(headers=headers) as session:

        async def counted(what: str, method: str, path: str, **kwargs: Any) -> Any:
            since = len(log.entries)
            async with session.request(method, url + path, **kwargs) as response:
                body = await response.read()
                assert response.status < 300, f"{what}: {response.status} {body[:200]!r}"
            await log.settled()
            found[what] = dict(log.counts(since, ignore=sweeps(cluster)))
            return json.loads(body) if body.startswith(b"{") else None

        def form(data: bytes) -> aiohttp.FormData:
            built = aiohttp.FormData()
            built.add_field("conversationId", "probe")
            built.add_field("file", data, filename="p.bin", content_type="application/octet-stream")
            return built

        small = os.urandom(size)
        stored = await counted(f"upload {size / 1e6:g} MB", "POST", "/files", data=form(small))
        large = os.urandom(big)
        await counted(f"upload {big / 1e6:g} MB (8 MiB parts)", "POST", "/files", data=form(large))
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


async def measure_store(
    args: argparse.Namespace, store: Store, workdir: Path, suite: Suite
) -> None:
    """Every instance count on one store: rounds into `suite.rounds`, then the probes."""
    log = await S3Log(store.server.port).start()
    suite.stores[store.kind] = store.version
    try:
        for count in args.instances:
            prefix = f"scaleout-{store.kind}-{count}/"
            cluster = Cluster(
                workdir / f"cluster-{store.kind}-{count}",
                f"s3://{BUCKET}/{prefix}",
                log.endpoint,
                size=count,
                serve_args=(*SERVE_ARGS, "--api-key", KEY),
            )
            await cluster.start()
            try:
                print(f"{store.title}, {count} instance(s): warm-up", file=sys.stderr)
                warm = argparse.Namespace(**{**vars(args), "uploads": args.concurrency})
                await measured_round(cluster, store, log, warm, 0)
                await asyncio.to_thread(store.empty, prefix)
                for number in range(1, args.rounds + 1):
                    result = await measured_round(cluster, store, log, args, number)
                    suite.rounds.append(result)
                    print(
                        f"  round {number}: {result.mb_per_s:.0f} MB/s, instances "
                        f"{result.cpu['instances'] / result.gib:.2f} CPU s/GiB, "
                        f"S3 {sum(result.s3.values()) / max(result.uploads, 1):.2f} req/upload, "
                        f"load {result.load_before}",
                        file=sys.stderr,
                    )
                    await asyncio.to_thread(store.empty, prefix)
                if count == args.instances[0]:
                    found = await probes(cluster, log, args.size, args.big)
                    suite.probes[store.kind] = found
                    await asyncio.to_thread(store.empty, prefix)
            finally:
                await cluster.stop()
    finally:
        await log.close()


def new_suite(args: argparse.Namespace) -> Suite:
    return Suite(
        started=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        revision=git_revision(REPO_ROOT),
        machine=describe_machine({"nginx": nginx_program()}),
        size=args.size,
        big=args.big,
        concurrency=args.concurrency,
        uploads=args.uploads,
        load_before=load_average(),
    )


def finish(suite: Suite) -> Suite:
    suite.finished = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    suite.load_after = load_average()
    return suite


def parser() -> argparse.ArgumentParser:
    built = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    built.add_argument("--server", choices=[*KINDS, "both"], default="both", help="S3 server")
    built.add_argument("--instances", type=int, nargs="+", default=[1, 2, 3])
    built.add_argument("--uploads", type=int, default=128, help="per round (default 128)")
    built.add_argument("--concurrency", type=int, default=64)
    built.add_argument("--size", type=int, default=5_000_000, help="bytes (default 5 MB)")
    built.add_argument(
        "--big",
        type=int,
        default=40_000_000,
        help=(
            "the probe's upload of 8 MiB parts; its part count is timing-proof when the "
            "last part is over 1 MiB per part: a full part goes out only once another "
            "write follows, and a write is a batch of 512 KiB or more of what the network "
            "delivered (9 MB went as one PutObject in one run of three)"
        ),
    )
    built.add_argument("--rounds", type=int, default=2)
    built.add_argument("--write", action="store_true", help="update benchmarks/RESULTS.md")
    return built


async def run(args: argparse.Namespace, workdir: Path) -> Suite:
    """Start each store in turn (one at a time: they share the cores) and measure on it."""
    suite = new_suite(args)
    kinds = KINDS if args.server == "both" else (args.server,)
    for kind in kinds:
        with contextlib.ExitStack() as stack:
            print(f"starting {kind}", file=sys.stderr)
            store = await asyncio.to_thread(stack.enter_context, running(kind, workdir))
            await measure_store(args, store, workdir, suite)
    return finish(suite)


def main() -> None:
    command = parser()
    args = command.parse_args()
    if args.write and args.server != "both":
        command.error("--write needs --server both: the section holds both servers' figures")
    os.environ.update(FAKE_AWS)
    out = REPO_ROOT / "benchmarks" / "out"
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="s3-scaleout-") as temp:
        suite = asyncio.run(run(args, Path(temp)))
    raw = out / "s3_scaleout.json"
    raw.write_text(json.dumps(asdict(suite), indent=1))
    section = render(suite)
    print(section)
    print(f"({time.perf_counter() - started:.0f} s; raw figures in {raw})", file=sys.stderr)
    if args.write:
        write_section(section)


if __name__ == "__main__":
    main()
