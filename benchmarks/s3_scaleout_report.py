"""The scale-out benchmark's figures (s3_scaleout.py) and its section of RESULTS.md.

The section sits between two markers so that a later run replaces it in place;
a full `make bench` run keeps it (report.py KEPT_HEADINGS keeps everything from
its heading on), which once dropped the opening marker, so the section is also
found by its heading.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field

from .s3stores import TITLES
from .servers import REPO_ROOT

GiB = 1024**3
RESULTS = REPO_ROOT / "benchmarks" / "RESULTS.md"
BEGIN = "<!-- s3_scaleout: begin (written by python -m benchmarks.s3_scaleout --write) -->"
END = "<!-- s3_scaleout: end -->"
HEADING = "## Scale-out on S3"
HISTORY = "## History"


@dataclass
class Round:
    store: str  # "moto" or "rgw"
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
    load_before: str  # the 1-minute load average as the round began

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
    big: int  # the size of the probe's upload of several parts
    concurrency: int
    uploads: int
    load_before: str
    stores: dict[str, str] = field(default_factory=dict)  # kind -> version
    rounds: list[Round] = field(default_factory=list)
    # store -> what -> operation -> requests
    probes: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    finished: str = ""
    load_after: str = ""


def per_upload(counts: dict[str, int], uploads: int) -> str:
    parts = [f"{op} {n / uploads:.2f}" for op, n in sorted(counts.items(), key=lambda i: -i[1])]
    return ", ".join(parts)


def _row(suite: Suite, rounds: list[Round]) -> str:
    """One table row: medians over the rounds of one store and instance count."""

    def med(values: list[float]) -> float:
        return statistics.median(values)

    count = rounds[0].instances
    rates = [r.mb_per_s for r in rounds]
    per_gib = {g: med([r.cpu[g] / r.gib for r in rounds]) for g in rounds[0].cpu}
    spread = " / ".join(f"{med([r.instance_cpu[i] for r in rounds]):.2f}" for i in range(count))
    s3: Counter[str] = Counter()
    for r in rounds:
        s3.update(r.s3)
    uploads = sum(r.uploads for r in rounds)
    return (
        f"| {TITLES[rounds[0].store]} | {count} "
        f"| **{med(rates):.0f}** ({min(rates):.0f}-{max(rates):.0f}) "
        f"| {med([r.uploads / r.seconds for r in rounds]):.1f} "
        f"| **{per_gib['instances']:.2f}** "
        f"| **{per_gib['instances'] / GiB * suite.size * 1000:.0f}** | {spread} "
        f"| {per_gib['nginx']:.2f} | {per_gib['store']:.2f} | {per_gib['client+proxy']:.2f} "
        f"| {max(r.rss_above_idle for r in rounds) / suite.concurrency / 2**20:.1f} "
        f"| {sum(s3.values()) / uploads:.2f} ({per_upload(dict(s3), uploads)}) "
        f"| {sum(r.errors for r in rounds)} | {' / '.join(r.load_before for r in rounds)} |"
    )


def render(suite: Suite) -> str:
    """The RESULTS.md section: one row per store and instance count, then the probes."""
    stores = ", ".join(f"{TITLES[kind]} {version}" for kind, version in suite.stores.items())
    lines = [
        BEGIN,
        f"{HEADING}: 5 MB uploads through nginx to 1, 2 and 3 instances, on moto and on RGW",
        "",
        f"`python -m benchmarks.s3_scaleout --server both --write`, {suite.started} to "
        f"{suite.finished}, commit {suite.revision}; {suite.uploads} uploads of "
        f"{suite.size:,} bytes at {suite.concurrency} concurrent per round, medians over the "
        f"rounds after a warm-up. S3 servers: {stores}. moto is one Python process keeping "
        "objects in memory; RGW is the test suite's one-node Ceph cluster (tests/rgw.py: a "
        "monitor, one OSD on memstore, the gateway), its 'S3 server CPU' the three daemons "
        "summed. Instances are `streamproxy serve` on one `s3://` prefix, behind nginx (round "
        "robin, `proxy_request_buffering off`); every S3 request passes a logging proxy "
        "(tests/s3log.py) and is counted by operation. CPU from /proc (process trees); "
        "'client+proxy' is the benchmark's own process (the aiohttp load client and the "
        "logging proxy). Everything shares the machine's 2 cores with other jobs (load "
        f"average before: {suite.load_before}, after: {suite.load_after}; the last column "
        "is each round's 1-minute load as it began), so MB/s cannot grow with instances "
        "here: the figures to read are the costs per upload and whether they stay flat. "
        "RSS: the instances' summed resident memory, the worst round's peak above idle, "
        "divided by the uploads in flight (a file smaller than the 8 MiB part is held whole "
        "until its one PutObject). Access log on (log level info). ListObjects among the "
        "S3 requests is the resumable uploads' expiry sweep each instance runs every 30 s "
        "(runtime/retention.py), not the uploads'; it can fall into a probe below too.",
        "",
        "| S3 server | instances | median MB/s (min-max) | uploads/s | instances CPU s/GiB "
        "| instances CPU ms per upload | per instance CPU s (spread) | nginx CPU s/GiB "
        "| S3 server CPU s/GiB | client+proxy CPU s/GiB "
        "| RSS above idle per upload in flight, MiB | S3 requests per upload | errors "
        "| load before each round |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for store in suite.stores:
        for count in sorted({r.instances for r in suite.rounds if r.store == store}):
            rounds = [r for r in suite.rounds if r.store == store and r.instances == count]
            lines.append(_row(suite, rounds))
    lines += [
        "",
        "S3 requests of one operation through one instance (measured, same run; on RGW a "
        "file of several parts claims its name first, storage/s3nameclaim.py):",
        "",
        "| operation | " + " | ".join(TITLES[kind] for kind in suite.probes) + " |",
        "|---|" + "---|" * len(suite.probes),
    ]
    operations = list(dict.fromkeys(what for probes in suite.probes.values() for what in probes))
    for what in operations:
        cells = []
        for probes in suite.probes.values():
            counts = probes.get(what, {})
            ordered = sorted(counts.items(), key=lambda i: (-i[1], i[0]))
            cells.append(f"{sum(counts.values())}: " + ", ".join(f"{op} {n}" for op, n in ordered))
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    lines += ["", "What it means at scale: [docs/SCALING.md](../docs/SCALING.md).", END, ""]
    return "\n".join(lines)


def write_section(section: str) -> None:
    """Replace this benchmark's section of RESULTS.md, or put it before the History."""
    text = RESULTS.read_text()
    starts = [index for index in (text.find(BEGIN), text.find(HEADING)) if index >= 0]
    if starts and END in text:
        start = min(starts)
        text = text[:start] + section.rstrip("\n") + text[text.index(END, start) + len(END) :]
    elif HISTORY in text:
        head, _, tail = text.partition(HISTORY)
        text = head + section + "\n" + HISTORY + tail
    else:
        text = text.rstrip("\n") + "\n\n" + section
    RESULTS.write_text(text)
