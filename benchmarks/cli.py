"""Command line: `python -m benchmarks [--quick] [--scenarios KEY ...] [--rounds N]`.

A full run of every scenario against every server writes `benchmarks/RESULTS.md`, the
plots and the raw figures (`results.json`) beside it; anything else (quick, a subset,
extra streamproxy flags) writes to `benchmarks/out/`, so it can never overwrite the
committed full results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from pathlib import Path

from .harness import Harness, Options, SuiteResult
from .report import write_report
from .scenarios import FULL, QUICK, build_scenarios
from .warmpages import GiB, warm_memory

SERVER_NAMES = (
    "nginx",
    "streamproxy",
    "fastapi",
    "streamproxy-2w",
    "streamproxy-nofsync",
    "streamproxy-raw",
    "floor",
)
BENCH_DIR = Path(__file__).resolve().parent
OUT_DIR = BENCH_DIR / "out"


def build_parser() -> argparse.ArgumentParser:
    keys = ", ".join(scenario.key for scenario in build_scenarios(FULL))
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Load-test streamproxy side by side with nginx and FastAPI + uvicorn.",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, one round")
    parser.add_argument(
        "--scenarios", nargs="+", default=[], metavar="KEY", help=f"patterns among: {keys}"
    )
    parser.add_argument(
        "--servers",
        nargs="+",
        default=list(SERVER_NAMES),
        choices=SERVER_NAMES,
        help="default: all of them. streamproxy-2w is `--workers 2`, in the scenarios of "
        "many concurrent requests; streamproxy-nofsync (`--fsync false`) and streamproxy-raw "
        "(the streamproxy process sent the raw-body PUT) in the uploads issue 13 grades; "
        "floor (benchmarks/peer_floor.py, aiohttp's least durable upload) in 5 KB uploads and 5 "
        "MB x 64",
    )
    parser.add_argument(
        "--py-spy",
        nargs="+",
        default=[],
        metavar="KEY",
        help="after the rounds of these scenarios (patterns), one more run of each "
        "streamproxy row under py-spy, not measured; its top lines go into the report",
    )
    parser.add_argument("--rounds", type=int, help="measured rounds (default 3; quick 1)")
    parser.add_argument("--no-warmup", action="store_true", help="skip the discarded warm-up")
    parser.add_argument(
        "--streamproxy-args",
        default="",
        metavar="ARGS",
        help="extra flags for streamproxy serve, e.g. '--chunk-size 1M'",
    )
    parser.add_argument(
        "--warm-memory",
        type=float,
        metavar="GIB",
        help="memory touched before the first run, free page reporting paused meanwhile "
        "(benchmarks/warmpages.py; default 16, quick 1, 0: leave the machine as it is)",
    )
    parser.add_argument("--tmpdir", help="where the servers store (default: the system's)")
    parser.add_argument("--note", default="", help="a line for the report and its history")
    parser.add_argument("--output", type=Path, help="the Markdown report to write")
    parser.add_argument(
        "--from-json", type=Path, help="re-render the report of an earlier run's JSON"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    if arguments.from_json:
        result = SuiteResult.from_json(json.loads(arguments.from_json.read_text()))
    else:
        options = Options(
            profile=QUICK if arguments.quick else FULL,
            scenarios=arguments.scenarios,
            servers=arguments.servers,
            rounds=arguments.rounds,
            warmup=not arguments.no_warmup,
            streamproxy_args=shlex.split(arguments.streamproxy_args),
            tmpdir=arguments.tmpdir,
            note=arguments.note,
            py_spy=arguments.py_spy,
        )
        warm = arguments.warm_memory
        result = run(
            options, int((1 if arguments.quick else 16) * GiB if warm is None else warm * GiB)
        )
    official = result.complete and result.profile == "full" and result.rounds >= 3
    if not arguments.from_json:
        # The full run's raw figures sit beside RESULTS.md (re-render with --from-json).
        raw = BENCH_DIR / "results.json" if official else OUT_DIR / f"results-{result.profile}.json"
        raw.parent.mkdir(exist_ok=True)
        raw.write_text(json.dumps(result.to_json(), indent=1))
        print(f"raw results: {raw}", file=sys.stderr)
    output = arguments.output or (
        BENCH_DIR / "RESULTS.md" if official else OUT_DIR / f"RESULTS-{result.profile}.md"
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    write_report(result, output, official=official)
    print(f"report: {output}", file=sys.stderr)
    return 0


def run(options: Options, warm: int = 0) -> SuiteResult:
    """The suite on uvloop, with `warm` bytes of memory touched first (see warmpages)."""
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with warm_memory(warm) as memory, runner:
        result = runner.run(Harness(options).run())
    result.machine["memory"] = memory
    return result
