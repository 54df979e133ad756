"""The report: RESULTS.md (tables, targets, memory, history) and the PNG plots.

Figures are medians over the measured rounds with the min-max beside them; a ratio is
a server's median over nginx's median in the same run. The "History" section of an
existing RESULTS.md is carried over, and a full run adds one line to it.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .harness import RunRecord, SuiteResult
from .scenarios import MiB, human_size

SERVER_ORDER = ("nginx", "streamproxy", "streamproxy-2w", "streamproxy-nofsync", "fastapi")
UPLOAD_GROUPS = ("upload", "upload-concurrency", "upload-size", "slow-clients")
HISTORY_HEADING = "## History"
HISTORY_INTRO = (
    "One line per full run, newest last (the harness adds it): streamproxy's medians and "
    "ratios to nginx. Under it, note what changed and why, so each optimisation has its "
    "before and after figures.\n"
)


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


# -- sections ---------------------------------------------------------------------------


def results_table(result: SuiteResult, cells: dict[tuple[str, str], Cell]) -> list[str]:
    rows = []
    for scenario in result.scenarios:
        for server in ordered_servers(s for (k, s) in cells if k == scenario["key"]):
            cell = cells[(scenario["key"], server)]
            if not cell.ok:
                rows.append([scenario["title"], server, cell.status(), "", "", "", "", "", ""])
                continue
            errors = f" ({cell.errors} errors)" if cell.errors else ""
            rows.append(
                [
                    scenario["title"],
                    server,
                    f"**{fmt_rate(cell.median, cell.unit)}** {cell.unit}{errors}",
                    f"{fmt_rate(cell.low, cell.unit)}-{fmt_rate(cell.high, cell.unit)}",
                    fmt_ratio(cell.ratio),
                    fmt_seconds(cell.server_cpu),
                    fmt_seconds(cell.cpu_per_gib),
                    fmt_seconds(cell.client_cpu),
                    fmt_mib(cell.rss_above_idle),
                ]
            )
    # Repeat the scenario only on its first row, so the table reads in blocks.
    previous = None
    for row in rows:
        if row[0] == previous:
            row[0] = ""
        else:
            previous = row[0]
    return table(
        [
            "scenario",
            "server",
            "median",
            "min-max",
            "x nginx",
            "server CPU s",
            "server CPU s/GiB",
            "client CPU s",
            "RSS peak above idle, MiB",
        ],
        rows,
    )


def _cell(cells: dict[tuple[str, str], Cell], key: str, server: str) -> Cell | None:
    cell = cells.get((key, server))
    return cell if cell is not None and cell.ok else None


def targets_table(result: SuiteResult, cells: dict[tuple[str, str], Cell]) -> list[str]:
    """Issue 5's targets for streamproxy, against what this run measured."""
    rows: list[list[str]] = []

    def verdict(value: float | None, target: float, higher_is_better: bool = True) -> str:
        if value is None:
            return "not measured"
        met = value >= target if higher_is_better else value <= target
        return "met" if met else "**not met**"

    def ratio_row(label: str, key: str, target: float) -> None:
        """The one-process figure; with `--workers 2` beside it where that ran."""
        cell = _cell(cells, key, "streamproxy")
        value = cell.ratio if cell else None
        shown = fmt_ratio(value)
        workers = _cell(cells, key, "streamproxy-2w")
        if workers is not None and workers.ratio is not None:
            shown += f" ({fmt_ratio(workers.ratio)} with --workers 2)"
            value = max(value or 0.0, workers.ratio)
        rows.append([label, f"≥ {target:g}x", shown, verdict(value, target)])

    def memory_row(label: str, target: float, value: float | None, digits: int) -> None:
        """A figure in MiB that must stay at or under `target`."""
        shown = "—" if value is None else f"{value:.{digits}f} MiB"
        rows.append([label, f"≤ {target:g} MiB", shown, verdict(value, target, False)])

    ratio_row("one big multipart upload vs nginx PUT", "upload-big", 0.9)
    ratio_row("5 MB uploads at 64 concurrent", "upload-5m-c64", 0.9)
    ratio_row("big download", "download-big", 1.0)
    ratio_row("1 MiB ranges at 16 concurrent", "range-1m-c16", 0.9)
    ratio_row("5 KB downloads at 64 concurrent", "download-5k-c64", 0.15)

    imported = _cell(cells, "import-big", "streamproxy")
    direct = _cell(cells, "upload-big", "streamproxy")  # the big upload, alone
    if imported and direct:
        value: float | None = imported.median / direct.median
        shown = fmt_ratio(value)
    else:
        value = None
        failed = cells.get(("import-big", "streamproxy"))
        shown = failed.status() if failed is not None else "not run"
    rows.append(["import from URL vs the direct upload", "≥ 0.8x", shown, verdict(value, 0.8)])

    worst: tuple[float, str] | None = None
    for scenario in result.scenarios:
        if scenario["group"] not in UPLOAD_GROUPS:
            continue
        ours = _cell(cells, scenario["key"], "streamproxy")
        peer = _cell(cells, scenario["key"], "fastapi")
        if ours and peer and peer.median:
            ratio = ours.median / peer.median
            if worst is None or ratio < worst[0]:
                worst = (ratio, scenario["title"])
    rows.append(
        [
            "every upload scenario vs FastAPI + uvicorn (the worst one)",
            "≥ 2x",
            f"{fmt_ratio(worst[0])} ({worst[1]})" if worst else "—",
            verdict(worst[0] if worst else None, 2.0),
        ]
    )

    above = direct.rss_above_idle / MiB if direct else None
    memory_row("RSS during the big upload, above idle", 50, above, 1)
    crowd = _cell(cells, "upload-5m-c256", "streamproxy")
    per = crowd.rss_above_idle / MiB / crowd.scenario["concurrency"] if crowd else None
    label = "RSS per transfer in flight at 256 concurrent, above idle after the warm-up"
    memory_row(label, 1.5, per, 2)
    fresh = per_transfer_from_fresh(result, crowd) if crowd else None
    memory_row("the same, above the fresh process's idle RSS (see Memory)", 1.5, fresh, 2)
    slow = _cell(cells, "slow-clients", "streamproxy")
    kept = slow.median / direct.median if slow and direct and direct.median else None
    rows.append(
        [
            "fast upload's rate while slow clients trickle, vs alone",
            "must not collapse",
            fmt_ratio(kept),
            "—",
        ]
    )
    return table(["target (issue 5)", "target", "measured", ""], rows)


def first_idle(result: SuiteResult, server: str) -> int | None:
    """The server's idle RSS before its first run: the fresh process (after start-up and
    the fixtures), before any scenario grew a heap that Python then keeps."""
    for record in result.records:
        if record.server == server and record.rss_idle:
            return record.rss_idle
    return None


def per_transfer_from_fresh(result: SuiteResult, cell: Cell) -> float | None:
    fresh = first_idle(result, cell.server)
    if fresh is None:
        return None
    concurrency = int(cell.scenario["concurrency"])
    return max(0, cell.rss_peak - fresh) / MiB / concurrency


def memory_table(result: SuiteResult, cells: dict[tuple[str, str], Cell]) -> list[str]:
    rows = []
    crowd_n = next(
        (s["concurrency"] for s in result.scenarios if s["key"] == "upload-5m-c256"), 256
    )
    slow_n = next((s["concurrency"] for s in result.scenarios if s["key"] == "slow-clients"), 0)
    for server in ordered_servers(result.servers):
        big = _cell(cells, "upload-big", server)
        crowd = _cell(cells, "upload-5m-c256", server)
        slow = _cell(cells, "slow-clients", server)
        fresh = first_idle(result, server)
        from_fresh = per_transfer_from_fresh(result, crowd) if crowd else None
        rows.append(
            [
                server,
                fmt_mib(fresh),
                fmt_mib(big.rss_above_idle) if big else "—",
                fmt_mib(crowd.rss_above_idle) if crowd else "—",
                f"{crowd.rss_above_idle / MiB / crowd_n:.2f}" if crowd else "—",
                fmt_mib(crowd.rss_peak) if crowd else "—",
                f"{from_fresh:.2f}" if from_fresh is not None else "—",
                f"{slow.rss_above_idle / MiB / slow_n:.2f}" if slow and slow_n else "—",
            ]
        )
    lines = table(
        [
            "server",
            "fresh idle RSS, MiB",
            "big upload: peak above idle, MiB",
            f"{crowd_n} concurrent: peak above idle, MiB",
            "per transfer, above idle, MiB",
            f"{crowd_n} concurrent: peak RSS, MiB",
            "per transfer, above fresh idle, MiB",
            "slow clients: per slow upload above idle, MiB",
        ],
        rows,
    )
    return [
        *lines,
        "",
        "'Above idle' follows the suite's definition (idle sampled after the scenario's "
        "warm-up), which hides growth the warm-up already paid for: a Python process keeps "
        "its grown heap. 'Above fresh idle' takes the server's RSS before its first run "
        "instead (started, fixtures made), so it is the capacity figure: what each transfer "
        "in flight costs a process that has not seen that load before.",
    ]


def slow_table(result: SuiteResult, cells: dict[tuple[str, str], Cell]) -> list[str]:
    rows = []
    scenario = next((s for s in result.scenarios if s["key"] == "slow-clients"), None)
    if scenario is None:
        return []
    for server in ordered_servers(result.servers):
        cell = _cell(cells, "slow-clients", server)
        if cell is None:
            failed = cells.get(("slow-clients", server))
            rows.append([server, failed.status() if failed else "not run", "", "", ""])
            continue
        big = _cell(cells, "upload-big", server)
        alone = big.median if big else None
        trickle = cell.extra("trickle_MBps")
        rows.append(
            [
                server,
                fmt_rate(alone, "MB/s") if alone else "—",
                f"{fmt_rate(cell.median, 'MB/s')} ({fmt_rate(cell.low, 'MB/s')}-"
                f"{fmt_rate(cell.high, 'MB/s')})",
                fmt_ratio(cell.median / alone if alone else None),
                f"{trickle:.1f}" if trickle is not None else "—",
            ]
        )
    return table(
        [
            "server",
            "fast upload alone, MB/s",
            "with the slow clients, MB/s (min-max)",
            "with / alone",
            "slow clients' aggregate, MB/s",
        ],
        rows,
    )


def machine_table(result: SuiteResult) -> list[str]:
    rows = [[key, value] for key, value in result.machine.items()]
    rows += [
        ["load average before / after", f"{result.load_before} / {result.load_after}"],
        ["commit", result.revision],
        ["run", f"{result.started} to {result.finished} ({result.elapsed_s / 60:.1f} min)"],
    ]
    return table(["", ""], rows)


def method_notes(result: SuiteResult) -> list[str]:
    streamproxy_args = " ".join(result.streamproxy_args)
    wrk_seconds = result.settings.get("wrk_seconds", "?")
    extra = f" plus `{streamproxy_args}`" if streamproxy_args else ""
    return [
        f"- Everything on 127.0.0.1; the servers and the load generator share the machine's "
        f"{result.machine.get('cores', '?')} cores, so a client's CPU is CPU a server "
        "did not get (both are reported).",
        "- **nginx**: Debian's nginx-light, generated config: 2 workers, `sendfile on`, "
        "`dav_methods PUT` into a temp directory, `client_max_body_size 0`, "
        "`access_log off`, otherwise defaults (so `client_body_buffer_size` is 16k). "
        "It takes a plain PUT, computes no hash and does not fsync.",
        "- **streamproxy**: `streamproxy serve --max-size 2G --log-level warning` on local "
        f"storage in a temp directory{extra}: defaults otherwise, so it computes MD5 and "
        "fsyncs before every 200. `streamproxy-2w` adds `--workers 2` (two processes on one "
        "port, as nginx has two workers) and runs in the scenarios of many concurrent "
        "requests only; `streamproxy-nofsync`, when present, adds `--fsync false`.",
        "- **FastAPI + uvicorn**: `benchmarks/peer_fastapi.py`, one uvicorn process "
        "(uvloop, httptools), no access log; a sync `UploadFile` handler that copies the "
        "spooled upload to disk while computing MD5 (no fsync); `FileResponse` downloads.",
        "- Uploads: multipart POST with `file` and `conversationId` to streamproxy and "
        "FastAPI, PUT to nginx, all with a Content-Length. The body streams from a "
        "pre-built 256 KiB random block through aiohttp (uvloop), the multipart envelope "
        "built by hand around it.",
        "- Downloads: the big one over a blocking socket with `recv_into` one reused buffer "
        "(aiohttp's client is the bottleneck there); 5 KB uploads, 5 KB downloads and the "
        f"range GETs with wrk (2 threads, keep-alive, {wrk_seconds} s per run). "
        "Slow clients trickle from a separate Python process, 16 KiB every 250 ms each.",
        f"- Each scenario: a warm-up run per server first, discarded — on this VM the first "
        f"touch of a memory page is slow (fresh page cache and heap), which makes early runs "
        f"noisy — then {result.rounds} measured round(s), the servers in rotating order. "
        "Before every run the files earlier runs uploaded are deleted (so the page cache "
        "reuses pages already touched), and dirty pages are written back when over 32 MiB.",
        "- Rates: MB/s is 10⁶ payload bytes (the file, not envelopes or headers) per "
        "second; req/s counts 2xx answers. Median and min-max over the rounds; "
        "`x nginx` is the median over nginx's median in the same run.",
        "- CPU: a server's is utime + stime of its whole process tree (nginx's master and "
        "workers) from /proc/PID/stat across the run; the client's is getrusage of the "
        "harness process (including the RSS sampler thread, well under 1%) and of the "
        "tools it ran (wrk, the slow-client process). Both are medians per run. "
        "CPU s/GiB is the server's CPU seconds per GiB of payload.",
        "- Memory: the VmRSS of the server's process tree, summed, sampled every 50 ms on "
        "a thread. Idle is the median of 5 samples just before the run, after the "
        "scenario's warm-up; 'peak above idle' is the worst round. A Python process keeps "
        "the heap it grew, so growth a warm-up already paid for does not show again: the "
        "memory table also gives the absolute peak.",
    ]


def headline(cells: dict[tuple[str, str], Cell]) -> str:
    parts = []
    for key, label in (
        ("upload-big", "big upload"),
        ("upload-5m-c64", "5 MBx64"),
        ("upload-5k-c64", "5 KB up"),
        ("download-big", "big download"),
        ("range-1m-c16", "ranges"),
        ("download-5k-c64", "5 KB down"),
    ):
        cell = _cell(cells, key, "streamproxy")
        if cell is not None:
            parts.append(
                f"{label} {fmt_rate(cell.median, cell.unit)} {cell.unit} ({fmt_ratio(cell.ratio)})"
            )
    return "; ".join(parts)


# Sections other tools write into RESULTS.md (benchmarks/s3_scaleout.py), kept with the
# history when a full run rewrites the file.
KEPT_HEADINGS = ("## Scale-out on S3", HISTORY_HEADING)


def existing_history(path: Path) -> str:
    """What a full run carries over: the kept sections and the history, as they were."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    found = [index for index in map(text.find, KEPT_HEADINGS) if index >= 0]
    return text[min(found) :].rstrip() + "\n" if found else ""


def render(
    result: SuiteResult, cells: dict[tuple[str, str], Cell], official: bool, history: str
) -> str:
    lines = ["# Benchmarks: streamproxy beside nginx and FastAPI + uvicorn", ""]
    if official:
        lines.append(
            f"Full run (`make bench`): {result.rounds} rounds after a warm-up, "
            f"{result.started}, commit {result.revision}."
        )
    else:
        lines.append(
            f"**{result.profile.upper()} RUN — not the committed results.** "
            f"Profile `{result.profile}`, {result.rounds} round(s)"
            f"{', scenarios chosen by hand' if not result.complete else ''}; sizes are "
            "smaller than the issue's, so use it to check the plumbing, not to quote figures."
        )
    if result.note:
        lines += ["", f"> {result.note}"]
    lines += [""]
    if result.unavailable_servers:
        lines += ["Servers not measured:", ""]
        lines += [f"- {name}: {why}" for name, why in result.unavailable_servers.items()]
        lines += [""]
    lines += ["## Results", ""]
    lines += results_table(result, cells)
    lines += ["", "## Against the targets of issue 5 (streamproxy)", ""]
    lines += targets_table(result, cells)
    lines += ["", "## Memory", ""]
    lines += memory_table(result, cells)
    slow = slow_table(result, cells)
    if slow:
        lines += ["", "## Slow clients", ""]
        lines += slow
        trickle = result.settings.get("trickle_count", "?")
        rate = result.settings.get("trickle_rate", 0) // 1024
        lines += [
            "",
            f"'Alone' is the big-upload scenario's median in this run. The fast upload runs "
            f"after the {trickle} slow uploads have connected and trickled for a second; "
            f"the last column is what they got through meanwhile (they ask for {rate} KiB/s "
            f"each, {trickle * rate * 1024 / 1e6:.1f} MB/s together).",
        ]
    lines += ["", "## Plots", ""]
    for name, caption in PLOTS:
        lines.append(f"![{caption}]({name})")
    lines += ["", "## How this was measured", ""]
    lines += method_notes(result)
    lines += ["", "## Machine", ""]
    lines += machine_table(result)
    lines += [""]
    if official:
        note = f" ({result.note.rstrip('.')})" if result.note else ""
        entry = f"- {result.started}, commit {result.revision}: {headline(cells)}.{note}"
        if not history:
            history = f"{HISTORY_HEADING}\n\n{HISTORY_INTRO}"
        if f"- {result.started}, commit {result.revision}" in history:
            entry = ""  # re-rendered from its JSON: the run is already in the history
        lines += [history.rstrip(), *([entry] if entry else []), ""]
    return "\n".join(lines)


# -- plots ------------------------------------------------------------------------------

PLOTS = (
    ("throughput-vs-concurrency.png", "upload throughput against concurrency"),
    ("rss-vs-size.png", "server RSS against the size of one upload"),
    ("rss-vs-concurrency.png", "server RSS against concurrent uploads"),
)
COLORS = {
    "nginx": "tab:green",
    "streamproxy": "tab:blue",
    "streamproxy-nofsync": "tab:cyan",
    "streamproxy-2w": "tab:purple",
    "fastapi": "tab:red",
}


def plot(result: SuiteResult, cells: dict[tuple[str, str], Cell], directory: Path) -> list[Path]:
    """The three PNGs; none when matplotlib is not installed (`pip install -e '.[bench]'`)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    by_group: dict[str, list[dict[str, Any]]] = {}
    for scenario in result.scenarios:
        by_group.setdefault(scenario["group"], []).append(scenario)
    concurrency = sorted(by_group.get("upload-concurrency", []), key=lambda s: s["concurrency"])
    sizes = sorted(
        by_group.get("upload-size", []) + by_group.get("upload", [])[:1], key=lambda s: s["size"]
    )
    sizes = [s for s in sizes if s["unit"] == "MB/s"]
    servers = ordered_servers(result.servers)
    medium = human_size(int(result.settings.get("medium", 5_000_000)))

    def series(
        scenarios: list[dict[str, Any]], server: str, x: Callable[[dict[str, Any]], float]
    ) -> list[tuple[float, Cell]]:
        points = []
        for scenario in scenarios:
            cell = _cell(cells, scenario["key"], server)
            if cell is not None:
                points.append((x(scenario), cell))
        return points

    if concurrency:
        figure, axes = plt.subplots(figsize=(6.4, 4), dpi=90)
        for server in servers:
            points = series(concurrency, server, lambda s: s["concurrency"])
            if not points:
                continue
            xs = [p[0] for p in points]
            ys = [p[1].median for p in points]
            below = [p[1].median - p[1].low for p in points]
            above = [p[1].high - p[1].median for p in points]
            axes.errorbar(
                xs,
                ys,
                yerr=[below, above],
                marker="o",
                capsize=3,
                label=server,
                color=COLORS.get(server),
            )
        axes.set_xscale("log", base=2)
        axes.set_xticks([s["concurrency"] for s in concurrency])
        axes.set_xticklabels([str(s["concurrency"]) for s in concurrency])
        axes.set_xlabel(f"concurrent uploads ({medium} each)")
        axes.set_ylabel("MB/s (median, min-max)")
        axes.set_ylim(bottom=0)
        axes.set_title(f"Upload throughput against concurrency ({result.profile} run)")
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        path = directory / PLOTS[0][0]
        figure.savefig(path)
        plt.close(figure)
        written.append(path)

    def rss_plot(
        scenarios: list[dict[str, Any]],
        x: Callable[[dict[str, Any]], float],
        xlabel: str,
        title: str,
        name: str,
        labels: list[str],
    ) -> None:
        if not scenarios:
            return
        figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=90)
        for server in servers:
            points = series(scenarios, server, x)
            if not points:
                continue
            xs = [p[0] for p in points]
            color = COLORS.get(server)
            left.plot(
                xs, [p[1].rss_above_idle / MiB for p in points], "o-", label=server, color=color
            )
            right.plot(xs, [p[1].rss_peak / MiB for p in points], "o-", label=server, color=color)
        for axes, ylabel in ((left, "peak above idle, MiB"), (right, "peak RSS, MiB")):
            axes.set_xscale("log", base=2)
            axes.set_xticks([x(s) for s in scenarios])
            axes.set_xticklabels(labels)
            axes.set_xlabel(xlabel)
            axes.set_ylabel(ylabel)
            axes.set_ylim(bottom=0)
            axes.grid(alpha=0.3)
        left.legend()
        figure.suptitle(title)
        figure.tight_layout()
        path = directory / name
        figure.savefig(path)
        plt.close(figure)
        written.append(path)

    rss_plot(
        sizes,
        lambda s: s["size"],
        "size of one upload",
        f"Server RSS against upload size ({result.profile} run)",
        PLOTS[1][0],
        [human_size(s["size"]) for s in sizes],
    )
    rss_plot(
        concurrency,
        lambda s: s["concurrency"],
        f"concurrent uploads ({medium} each)",
        f"Server RSS against concurrency ({result.profile} run)",
        PLOTS[2][0],
        [str(s["concurrency"]) for s in concurrency],
    )
    return written


def write_report(result: SuiteResult, output: Path, official: bool) -> None:
    cells = summarize(result)
    history = existing_history(output) if official else ""
    plot(result, cells, output.parent)
    output.write_text(render(result, cells, official, history))
