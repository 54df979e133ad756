"""The PNG plots of a run: throughput and RSS against concurrency, RSS against size."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from .cells import Cell, measured, ordered_servers
from .harness import SuiteResult
from .scenarios import MiB, human_size

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
            cell = measured(cells, scenario["key"], server)
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
