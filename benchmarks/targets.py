"""The targets: issue 13's (the ones in force) and issue 5's, against what a run measured.

Issue 13 grades on the one-process figure with streamproxy hashing and fsyncing;
`--workers 2` is shown beside it, never in its place.
"""

from __future__ import annotations

from .cells import UPLOAD_GROUPS, Cell, fmt_ratio, measured, table
from .commitcost import commit_from_machine
from .harness import SuiteResult
from .scenarios import MiB
from .system import md5_from_machine


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
        cell = measured(cells, key, "streamproxy")
        value = cell.ratio if cell else None
        shown = fmt_ratio(value)
        workers = measured(cells, key, "streamproxy-2w")
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

    imported = measured(cells, "import-big", "streamproxy")
    direct = measured(cells, "upload-big", "streamproxy")  # the big upload, alone
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
        ours = measured(cells, scenario["key"], "streamproxy")
        peer = measured(cells, scenario["key"], "fastapi")
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
    crowd = measured(cells, "upload-5m-c256", "streamproxy")
    per = crowd.rss_above_idle / MiB / crowd.scenario["concurrency"] if crowd else None
    label = "RSS per transfer in flight at 256 concurrent, above idle after the warm-up"
    memory_row(label, 1.5, per, 2)
    fresh = per_transfer_from_fresh(result, crowd) if crowd else None
    memory_row("the same, above the fresh process's idle RSS (see Memory)", 1.5, fresh, 2)
    slow = measured(cells, "slow-clients", "streamproxy")
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


def _verdict(value: float | None, target: float, higher_is_better: bool = True) -> str:
    if value is None:
        return "not measured"
    met = value >= target if higher_is_better else value <= target
    return "met" if met else "**not met**"


# How each row that isolates a cost is named beside a graded figure.
_BESIDE = {
    "streamproxy-2w": "with --workers 2",
    "streamproxy-nofsync": "with --fsync false",
    "streamproxy-raw": "as raw PUTs",
}


def issue13_table(result: SuiteResult, cells: dict[tuple[str, str], Cell]) -> list[str]:
    """Issue 13's targets: ratios in this run, streamproxy hashing MD5 and fsyncing, graded
    on the one-process figure (`--workers 2` beside it, not instead of it)."""
    rows: list[list[str]] = []
    bounds = Bounds(result, cells)

    def graded(
        label: str, value: float | None, target: float, beside: str = "", bound: str = "—"
    ) -> None:
        shown = fmt_ratio(value) + (f" ({beside})" if beside else "")
        rows.append([label, f"≥ {target:g}x", shown, _verdict(value, target), bound])

    def ratio(key: str, server: str, reference: str = "nginx") -> float | None:
        ours, theirs = measured(cells, key, server), measured(cells, key, reference)
        return ours.median / theirs.median if ours and theirs and theirs.median else None

    def beside(key: str, *servers: str, reference: str = "nginx") -> str:
        """The rows that isolate a cost, as ratios shown beside the graded figure (those
        that ran)."""
        ratios = ((ratio(key, server, reference), _BESIDE[server]) for server in servers)
        return ", ".join(f"{fmt_ratio(value)} {how}" for value, how in ratios if value is not None)

    graded(
        "one 1 GiB upload (multipart) vs nginx PUT",
        ratio("upload-big", "streamproxy"),
        0.75,
        beside("upload-big", "streamproxy-nofsync"),
        bounds.one_stream("streamproxy"),
    )
    graded(
        "one 1 GiB upload (raw PUT) vs nginx PUT",
        ratio("upload-big", "streamproxy-raw"),
        0.85,
        bound=bounds.one_stream("streamproxy-raw"),
    )
    graded(
        "5 MB uploads, 64 concurrent, vs nginx",
        ratio("upload-5m-c64", "streamproxy"),
        0.6,
        beside("upload-5m-c64", "streamproxy-2w", "streamproxy-nofsync"),
        "; ".join(
            bound
            for bound in (
                bounds.two_cores(),
                bounds.aiohttp_floor("upload-5m-c64", "nginx", ceiling=False),
            )
            if bound != "—"
        )
        or "—",
    )
    graded(
        "1 MiB uploads one at a time, vs FastAPI + uvicorn (no fsync)",
        ratio("upload-1m", "streamproxy", "fastapi"),
        1.0,
        beside("upload-1m", "streamproxy-nofsync", reference="fastapi"),
        bounds.one_at_a_time(),
    )
    graded(
        "5 KB uploads, 64 concurrent (wrk), vs FastAPI",
        ratio("upload-5k-c64", "streamproxy", "fastapi"),
        2.0,
        beside(
            "upload-5k-c64",
            *("streamproxy-2w", "streamproxy-nofsync", "streamproxy-raw"),
            reference="fastapi",
        ),
        bounds.aiohttp_floor("upload-5k-c64", "fastapi", ceiling=True),
    )
    ours, nginx = (measured(cells, "upload-5m-c64", name) for name in ("streamproxy", "nginx"))
    ours_cpu = ours.cpu_per_gib if ours else None
    nginx_cpu = nginx.cpu_per_gib if nginx else None
    if ours_cpu is not None and nginx_cpu is not None:
        rows.append(
            [
                "server CPU per GiB uploaded, 5 MB x 64",
                f"≤ nginx's + 1.5 s ({nginx_cpu + 1.5:.2f} s)",
                f"{ours_cpu:.2f} s (nginx {nginx_cpu:.2f} s)",
                _verdict(ours_cpu, nginx_cpu + 1.5, higher_is_better=False),
                bounds.cpu_floor(),
            ]
        )
    else:
        rows.append(
            [
                "server CPU per GiB uploaded, 5 MB x 64",
                *("≤ nginx's + 1.5 s", "—", "not measured", "—"),
            ]
        )
    graded(
        "1 MiB range GETs, 16 concurrent, vs nginx",
        ratio("range-1m-c16", "streamproxy"),
        0.85,
        beside("range-1m-c16", "streamproxy-2w"),
    )
    crowd = measured(cells, "upload-5m-c256", "streamproxy")
    fresh = per_transfer_from_fresh(result, crowd) if crowd else None
    rows.append(
        [
            "memory per transfer in flight, 256 concurrent (from the fresh process)",
            "≤ 1.5 MiB (keep)",
            "—" if fresh is None else f"{fresh:.2f} MiB",
            _verdict(fresh, 1.5, higher_is_better=False),
            "—",
        ]
    )
    return table(["target (issue 13)", "target", "measured", "", "bound on this machine"], rows)


class Bounds:
    """What a server that hashes MD5 could reach on this machine, from this run. Ceilings
    (`≤`): one stream's MD5 is serial (the Machine table's rate on one core), and two
    cores can do no more than MD5 plus what nginx itself spends per GiB plus what the
    client spends. Estimates (`≈`, not ceilings: a server may spend less than nginx):
    nginx's efficiency plus MD5, and one-at-a-time uploads plus the least a commit waits."""

    def __init__(self, result: SuiteResult, cells: dict[tuple[str, str], Cell]) -> None:
        self._md5 = md5_from_machine(result.machine)
        self._commit = commit_from_machine(result.machine)
        self._cells = cells

    def _md5_seconds_per_gib(self) -> float | None:
        return (1 << 30) / self._md5 if self._md5 else None

    def one_stream(self, server: str) -> str:
        """The Machine table's MD5 rate, then what `server`'s own hashing measured: its
        share of the upload's time (near 100%: the upload went as fast as its MD5) and
        the MD5 rate it got, with the other work sharing the cores."""
        nginx = measured(self._cells, "upload-big", "nginx")
        if not self._md5 or nginx is None or not nginx.median:
            return "—"
        bound = f"≤ {fmt_ratio(self._md5 / 1e6 / nginx.median)} (MD5 on one core)"
        ours = measured(self._cells, "upload-big", server)
        busy = ours.extra("hashing_busy") if ours else None
        rate = ours.extra("hashing_MBps") if ours else None
        if busy is None or rate is None:
            return bound
        return (
            f"{bound}; measured: hashing ran {busy:.0%} of the upload's time, at {rate:,.0f}"
            f" MB/s (≤ {fmt_ratio(rate / nginx.median)} at that rate)"
        )

    def two_cores(self) -> str:
        key = "upload-5m-c64"
        ours, nginx = measured(self._cells, key, "streamproxy"), measured(self._cells, key, "nginx")
        md5 = self._md5_seconds_per_gib()
        if md5 is None or ours is None or nginx is None or not nginx.median:
            return "—"
        client = _client_per_gib(ours)
        if client is None or not nginx.cpu_per_gib:
            return "—"
        rate = 2 / (md5 + nginx.cpu_per_gib + client) * (1 << 30) / 1e6  # MB/s
        bound = f"≤ {fmt_ratio(rate / nginx.median)} (2 cores: MD5 + nginx's CPU + the client's)"
        # The same on the share of the cores nginx and its client kept busy (nginx too
        # leaves some idle): nginx's own efficiency plus MD5.
        nginx_client = _client_per_gib(nginx)
        if nginx_client is None:
            return bound
        share = (nginx.cpu_per_gib + nginx_client) / (md5 + nginx.cpu_per_gib + client)
        return f"{bound}; ≈ {fmt_ratio(share)} on the cores nginx kept busy"

    def one_at_a_time(self) -> str:
        """1 MiB uploads one at a time cannot hide the commit's fsyncs: the `--fsync
        false` process's time per upload plus the least a durable commit waits."""
        key = "upload-1m"
        nofsync = measured(self._cells, key, "streamproxy-nofsync")
        fastapi = measured(self._cells, key, "fastapi")
        commit = self._commit
        if commit is None or not (nofsync and nofsync.median and fastapi and fastapi.median):
            return "—"
        per_upload = (1 << 20) / (nofsync.median * 1e6) + commit
        rate = (1 << 20) / per_upload / 1e6
        return (
            f"≈ {fmt_ratio(rate / fastapi.median)} (--fsync false's time per upload"
            f" + the least a commit waits, {commit * 1000:.2f} ms){self._faults(key)}"
        )

    def _faults(self, key: str) -> str:
        """The servers' minor page faults per upload: a reference whose allocator maps
        its buffers afresh for every upload is slower in that run (RESULTS.md, How this
        was measured), which is then said beside the ratio rather than hidden in it."""
        shown = []
        for server in ("fastapi", "streamproxy"):
            cell = measured(self._cells, key, server)
            faults = cell.extra("faults_per_request") if cell else None
            if faults is not None:
                shown.append(f"{server} {faults:,.0f}")
        return f"; page faults per upload: {', '.join(shown)}" if shown else ""

    def aiohttp_floor(self, key: str, reference: str, *, ceiling: bool) -> str:
        """The `floor` row of the same run: aiohttp's low-level server doing only what a
        durable hashed upload needs. streamproxy is an aiohttp application, so its own
        code cannot take it past this (a different HTTP core might). A `ceiling` for small
        bodies; for large ones an estimate, as aiohttp's parser copies the floor's bytes
        once more than streamproxy's reads copy its own (runtime/connections.py), and
        the floor holds each body whole."""
        floor, theirs = measured(self._cells, key, "floor"), measured(self._cells, key, reference)
        if not (floor and floor.median and theirs and theirs.median):
            return "—"
        return (
            f"{'≤' if ceiling else '≈'} {fmt_ratio(floor.median / theirs.median)} (the"
            " aiohttp floor in this run: MD5 and the same durable store, nothing checked"
            f"{'' if ceiling else ', each body held whole'})"
        )

    def cpu_floor(self) -> str:
        nginx = measured(self._cells, "upload-5m-c64", "nginx")
        md5 = self._md5_seconds_per_gib()
        if md5 is None or nginx is None or nginx.cpu_per_gib is None:
            return "—"
        return f"≈ {nginx.cpu_per_gib + md5:.2f} s (nginx's + MD5's {md5:.2f} s)"


def _client_per_gib(cell: Cell) -> float | None:
    """The client's CPU seconds per GiB uploaded, from a cell's totals."""
    if not (cell.cpu_per_gib and cell.server_cpu and cell.client_cpu):
        return None
    return cell.client_cpu / (cell.server_cpu / cell.cpu_per_gib)
