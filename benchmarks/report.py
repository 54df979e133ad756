"""The report: RESULTS.md (tables, targets, memory, profiles, history).

The "History" section of an existing RESULTS.md is carried over (with the sections
other tools write, such as the scale-out), and a full run adds one line to it.
"""

from __future__ import annotations

from pathlib import Path

from .cells import (
    SERVER_DOES,
    UPLOAD_GROUPS,
    Cell,
    fmt_mib,
    fmt_rate,
    fmt_ratio,
    fmt_seconds,
    measured,
    ordered_servers,
    summarize,
    table,
)
from .harness import SuiteResult
from .plots import PLOTS, plot
from .profiling import SpyProfile
from .scenarios import MiB
from .targets import first_idle, issue13_table, per_transfer_from_fresh, targets_table

HISTORY_HEADING = "## History"
HISTORY_INTRO = (
    "One line per full run, newest last (the harness adds it): streamproxy's medians and "
    "ratios to nginx. Under it, note what changed and why, so each optimisation has its "
    "before and after figures.\n"
)

ISSUE13_NOTE = (
    "The rows beside the graded figures isolate costs in the same run: `streamproxy-raw` "
    "is the same process sent the raw-body `PUT /files?conversationId=..&fileName=..` "
    "(no multipart envelope), `streamproxy-nofsync` a process with `--fsync false` (still "
    "MD5 and sniffing); nginx's PUT neither hashes nor fsyncs, FastAPI's `UploadFile` "
    "neither fsyncs nor sniffs. The last column is, from this run's figures, what a "
    "server that computes the MD5 could reach on this machine. `≤`: a ceiling: one "
    "upload's MD5 is serial, so its rate is at most the Machine table's MD5 rate on one "
    "core; for the 1 GiB rows the server's own `streamproxy_hashing_seconds_total` adds "
    "what its hashing measured in the run: the share of the upload's time it ran (near "
    "100%: the upload went as fast as its MD5 could) and the MD5 rate it got with the "
    "other work sharing the cores; many uploads share two cores, so together they are "
    "at most 2 / (MD5 + nginx's own CPU + the client's CPU, per GiB). `≈`: an estimate "
    "from nginx's efficiency (not a ceiling: a server can spend less than nginx does): "
    "the same on the share of the cores nginx and its client kept busy, and the CPU per "
    "GiB of nginx plus MD5. For 1 MiB one at a time the `--fsync false` process's time "
    "per upload plus the Machine table's durable commit of a file already written back "
    "(the least of the fsyncs a one-at-a-time client waits for, which FastAPI does not "
    "do), and each server's minor page faults per upload (/proc, around each round): a "
    "FastAPI process whose allocator maps its 1 MiB spool buffers afresh takes ~450-490 per "
    "upload and runs slower than one that reuses its heap (0), and which of the two a "
    "process settles in varies by process (see the history, 2026-12-02 17:40). For 5 KB "
    "uploads the bound is the `floor` row of the same run: "
    "`benchmarks/peer_floor.py`, aiohttp's low-level server on the same uvloop doing "
    "only what a durable hashed upload needs (the file part found, MD5, an unnamed "
    "temporary written, fsynced and linked, the directory fsynced; no checks, no "
    "router, no middleware): streamproxy's own code cannot take an aiohttp application "
    "past it. At 5 MB x 64 the same floor (a body held whole as aiohttp's pieces, hashed "
    "and stored in one trip to a worker thread, the event loop only receiving) is an "
    "estimate (`≈`), not a ceiling: aiohttp's parser copies each of its bytes once more "
    "than streamproxy's reads do. For ranges, `python -m benchmarks.floor --kind range` "
    "measures the same floor (see the history)."
)
PROFILES_NOTE = (
    "One extra run per streamproxy row after the measured rounds, under two py-spy "
    "records at once (not a round: the sampling takes CPU from the same cores, so the rate "
    "is lower than the medians'). 'On-CPU' samples are of threads py-spy finds active "
    "(without `--idle`): running, runnable (on a loaded machine, waiting for a core) or in "
    "a disk wait (an `fsync` in state D counts); 'wall' samples every thread (`--idle`), "
    "leaving out executor threads with no work. A C call "
    "(MD5's `update`, `os.write`, uvloop's loop) shows as the Python line that made it: "
    "`Runner.run` is the event loop in C (uvloop, aiohttp's parser, socket reads), "
    "`_worker (thread.py:81)` an executor thread waiting for work."
)


def results_table(result: SuiteResult, cells: dict[tuple[str, str], Cell]) -> list[str]:
    rows = []
    for scenario in result.scenarios:
        upload = scenario["group"] in UPLOAD_GROUPS
        for server in ordered_servers(s for (k, s) in cells if k == scenario["key"]):
            cell = cells[(scenario["key"], server)]
            does = SERVER_DOES.get(server, "") if upload else ""
            if not cell.ok:
                rows.append([scenario["title"], server, does, cell.status(), *[""] * 7])
                continue
            errors = f" ({cell.errors} errors)" if cell.errors else ""
            rows.append(
                [
                    scenario["title"],
                    server,
                    does,
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
            "what it does to an upload",
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


def memory_table(result: SuiteResult, cells: dict[tuple[str, str], Cell]) -> list[str]:
    rows = []
    crowd_n = next(
        (s["concurrency"] for s in result.scenarios if s["key"] == "upload-5m-c256"), 256
    )
    slow_n = next((s["concurrency"] for s in result.scenarios if s["key"] == "slow-clients"), 0)
    # streamproxy-raw is streamproxy's process: its memory is that row's
    for server in ordered_servers(set(result.servers) - {"streamproxy-raw"}):
        big = measured(cells, "upload-big", server)
        crowd = measured(cells, "upload-5m-c256", server)
        slow = measured(cells, "slow-clients", server)
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
    for server in ordered_servers(set(result.servers) & set(scenario["servers"])):
        cell = measured(cells, "slow-clients", server)
        if cell is None:
            failed = cells.get(("slow-clients", server))
            rows.append([server, failed.status() if failed else "not run", "", "", ""])
            continue
        big = measured(cells, "upload-big", server)
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
        "requests only; `streamproxy-nofsync` adds `--fsync false` and `streamproxy-raw` "
        "is the `streamproxy` process sent the raw-body `PUT /files?conversationId=..&"
        "fileName=..`, both in the uploads issue 13 grades (1 GiB, 1 MiB one at a time, "
        "5 MB x 64, 5 KB x 64).",
        "- **floor** (5 KB uploads and 5 MB x 64): `benchmarks/peer_floor.py`, aiohttp's "
        "low-level `web.Server` on uvloop: the file part, MD5, an unnamed temporary "
        "written, fsynced, linked and its directory fsynced on a worker thread (a body of "
        "64 KiB or more hashed there too, held whole until then); nothing checked. The "
        "bound of the 5 KB target, and what an aiohttp application reaches at 5 MB x 64.",
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
        f"- Each scenario: a warm-up run per server first, discarded, then {result.rounds} "
        "measured round(s), the servers in rotating order. On this VM the first touch of a "
        "memory page is slow (~4 s per GiB) and free page reporting hands freed memory back "
        "to the host within seconds, so before the first run the suite pauses the reporting "
        "(as root) and touches the memory it will use (`warmpages.py`; the Machine table's "
        "`memory` row says what was done). Before every run the files earlier runs uploaded "
        "are moved aside when under 1 MiB (deleting them would slow every later file "
        "creation on an ext4 without a journal) and deleted when larger, and dirty pages "
        "are written back when over 32 MiB.",
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
        cell = measured(cells, key, "streamproxy")
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
    lines += ["", "## Against the targets of issue 13 (streamproxy)", ""]
    lines += issue13_table(result, cells)
    lines += ["", ISSUE13_NOTE]
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
    if result.profiles:
        lines += ["", "## Profiles (`--py-spy`)", "", PROFILES_NOTE, ""]
        for fields in result.profiles:
            lines += ["```", *SpyProfile(**fields).to_text(), "```"]
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


def write_report(result: SuiteResult, output: Path, official: bool) -> None:
    cells = summarize(result)
    history = existing_history(output) if official else ""
    plot(result, cells, output.parent)
    output.write_text(render(result, cells, official, history))
