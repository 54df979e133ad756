"""The benchmark harness still runs: one small upload and download, one round, no timing.

Keeps `benchmarks/` from rotting between `make bench` runs: servers start, the
client's streamed multipart and PUT bodies are accepted, /proc measurement and the
report work. It asserts nothing about speed.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from benchmarks.harness import Harness, Options
from benchmarks.report import write_report
from benchmarks.scenarios import QUICK, MiB
from benchmarks.system import find_program

pytestmark = pytest.mark.timeout(60)


async def test_harness_runs_one_small_round(tmp_path: Path) -> None:
    if find_program("nginx") is None:
        pytest.skip("needs nginx from Debian's package nginx-light (make bench installs it)")
    profile = dataclasses.replace(QUICK, big=4 * MiB, range_length=64 * 1024)
    options = Options(
        profile=profile,
        scenarios=["upload-big", "download-big"],
        servers=["nginx", "streamproxy"],
        rounds=1,
        warmup=False,
        tmpdir=str(tmp_path),
        quiet=True,
        install=False,
    )
    result = await Harness(options).run()

    assert result.unavailable_servers == {}
    runs = {(record.scenario, record.server): record for record in result.records}
    assert set(runs) == {
        (scenario, server)
        for scenario in ("upload-big", "download-big")
        for server in ("nginx", "streamproxy")
    }
    for record in runs.values():
        assert record.status == "ok", record
        assert record.errors == 0
        assert record.payload_bytes == 4 * MiB
        assert record.rss_peak > 0
    assert not result.complete  # a hand-picked subset never replaces RESULTS.md

    report = tmp_path / "RESULTS-smoke.md"
    write_report(result, report, official=False)
    text = report.read_text()
    assert "one 4 MiB upload" in text
    assert "not the committed results" in text
    # streamproxy's rows carry figures and a ratio to nginx, not just the scenario's title
    assert re.search(r"\| streamproxy \| \*\*[\d.,]+\*\* MB/s \| [\d.,-]+ \| \d+\.\d\dx \|", text)
