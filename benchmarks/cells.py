"""The figures of a run, cell by cell (one scenario against one server), and how they print.

Figures are medians over the measured rounds with the min-max beside them; a ratio is
a server's median over nginx's median in the same run.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .harness import RunRecord, SuiteResult
from .scenarios import MiB

SERVER_ORDER = (
    "nginx",
    "streamproxy",
    "streamproxy-raw",
    "streamproxy-2w",
    "streamproxy-nofsync",
    "fastapi",
    "floor",
)
UPLOAD_GROUPS = ("upload", "upload-concurrency", "upload-size", "slow-clients")
# What each row's server does to an upload, so no ratio hides a difference in work.
SERVER_DOES = {
    "nginx": "PUT; no hash, no fsync, no sniffing",
    "streamproxy": "multipart POST; MD5, fsync, sniffing",
    "streamproxy-raw": "raw-body PUT, same process; MD5, fsync, sniffing",
    "streamproxy-2w": "multipart POST, 2 processes; MD5, fsync, sniffing",
    "streamproxy-nofsync": "multipart POST; MD5, sniffing, no fsync",
    "fastapi": "multipart POST; MD5, no fsync, no sniffing",
    "floor": "multipart POST; MD5, fsync; aiohttp's low-level server, checks nothing",
}


@dataclass
class Cell:
    """One scenario against one server: its measured rounds and what they add up to."""

    scenario: dict[str, Any]
    server: str
    runs: list[RunRecord] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    ratio: float | None = None

    @property
    def unit(self) -> str:
        unit: str = self.scenario["unit"]
        return unit

    @property
    def ok(self) -> bool:
        return bool(self.runs)

    def _median(self, get: Callable[[RunRecord], float | None]) -> float | None:
        values = [value for run in self.runs if (value := get(run)) is not None]
        return statistics.median(values) if values else None

    @property
    def rates(self) -> list[float]:
        return [run.rate(self.unit) for run in self.runs]

    @property
    def median(self) -> float:
        return statistics.median(self.rates) if self.runs else 0.0

    @property
    def low(self) -> float:
        return min(self.rates) if self.runs else 0.0

    @property
    def high(self) -> float:
        return max(self.rates) if self.runs else 0.0

    @property
    def server_cpu(self) -> float | None:
        return self._median(lambda run: run.server_cpu)

    @property
    def client_cpu(self) -> float | None:
        return self._median(lambda run: run.client_cpu)

    @property
    def cpu_per_gib(self) -> float | None:
        return self._median(lambda run: run.server_cpu_per_gib)

    @property
    def rss_above_idle(self) -> int:
        """The worst round: memory targets are about the peak."""
        return max((run.rss_above_idle for run in self.runs), default=0)

    @property
    def rss_peak(self) -> int:
        return max((run.rss_peak for run in self.runs), default=0)

    @property
    def errors(self) -> int:
        return sum(run.errors for run in self.runs)

    def extra(self, key: str) -> float | None:
        return self._median(lambda run: run.extra.get(key))

    def status(self) -> str:
        if self.ok:
            return ""
        return self.failures[0] if self.failures else "not run"


def summarize(result: SuiteResult) -> dict[tuple[str, str], Cell]:
    scenarios = {scenario["key"]: scenario for scenario in result.scenarios}
    cells: dict[tuple[str, str], Cell] = {}
    for record in result.records:
        scenario = scenarios.get(record.scenario)
        if scenario is None:
            continue
        cell = cells.setdefault(
            (record.scenario, record.server), Cell(scenario=scenario, server=record.server)
        )
        if record.round == 0:
            if record.status != "ok":
                cell.failures.append(f"warm-up: {record.status}")
            continue
        if record.status == "ok":
            cell.runs.append(record)
        else:
            cell.failures.append(record.status)
    for (key, server), cell in cells.items():
        reference = cells.get((key, "nginx"))
        if server != "nginx" and cell.ok and reference is not None and reference.ok:
            cell.ratio = cell.median / reference.median if reference.median else None
    return cells


def ordered_servers(names: Iterable[str]) -> list[str]:
    present = set(names)
    return [name for name in SERVER_ORDER if name in present] + sorted(present - set(SERVER_ORDER))


# -- formatting -------------------------------------------------------------------------


def fmt_rate(value: float, unit: str) -> str:
    if unit == "req/s" or value >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}"


def fmt_ratio(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def fmt_seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def fmt_mib(value: float | None) -> str:
    return "—" if value is None else f"{value / MiB:.1f}"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def measured(cells: dict[tuple[str, str], Cell], key: str, server: str) -> Cell | None:
    cell = cells.get((key, server))
    return cell if cell is not None and cell.ok else None
