"""The machine and its tools: Debian packages the suite drives, versions, and a description.

nginx (Debian's nginx-light) and wrk are installed with apt-get when the suite runs
as root and they are missing; otherwise the scenarios that need them say so.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .commitcost import COMMIT_ROW, describe_commit

# program -> the Debian package that provides it
DEBIAN_PACKAGES = {"nginx": "nginx-light", "wrk": "wrk", "curl": "curl"}


def find_program(name: str) -> str | None:
    """A program on PATH or in the sbin directories a non-login shell may not list."""
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/local/sbin")


def ensure_programs(names: list[str], install: bool = True) -> dict[str, str | None]:
    """Paths of the programs, installing the missing ones' packages as root with apt-get."""
    missing = [name for name in names if find_program(name) is None]
    if install and missing and os.geteuid() == 0 and shutil.which("apt-get"):
        packages = sorted({DEBIAN_PACKAGES[name] for name in missing})
        print(f"installing Debian packages: {' '.join(packages)}", file=sys.stderr)
        command = ["install", "-y", "-q", "--no-install-recommends", *packages]
        if not _apt_get(command):
            _apt_get(["update", "-q"])
            _apt_get(command)
    return {name: find_program(name) for name in names}


def _apt_get(arguments: list[str]) -> bool:
    done = subprocess.run(
        ["apt-get", *arguments],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        check=False,
    )
    return done.returncode == 0


def _first_line(command: list[str]) -> str:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "not installed"
    text = (done.stdout or done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def memory_total() -> str:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                kib = int(line.split()[1])
                return f"{kib / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f} {five:.2f} {fifteen:.2f}"


def git_revision(repo: Path) -> str:
    def git(*arguments: str) -> str:
        command = ["git", "-C", str(repo), *arguments]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()

    try:
        head = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (with uncommitted changes)" if dirty else "")


def file_system(path: Path) -> str:
    """The file system under `path`, and for ext4 whether it has a journal: without one,
    ext4 looks up every inode deleted in the last minute each time it creates a file
    (see `harness.Bench.clean`)."""
    path = path.resolve()
    device, mount, kind = "?", "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        where = Path(fields[1])
        if (where == path or where in path.parents) and len(fields[1]) >= len(mount):
            device, mount, kind = fields[0], fields[1], fields[2]
    if kind == "ext4":
        journal = any(Path("/proc/fs/jbd2").glob(f"{Path(device).name}-*"))
        kind += "" if journal else ", without a journal"
    return f"{kind} ({device} on {mount})"


MD5_ROW = "MD5, one core (hashlib)"


def md5_rate(size: int = 64 << 20, passes: int = 3) -> float:
    """Bytes per second hashlib's MD5 digests on one core, the best of `passes`.

    One stream's MD5 is serial, so this is the ceiling of any server that hashes one
    upload, however it pipelines the rest; the report's bounds come from it.
    """
    data = os.urandom(size)
    hashlib.md5(data[: 1 << 20], usedforsecurity=False).digest()  # warm the code
    best = float("inf")
    for _ in range(passes):
        started = time.perf_counter()
        hashlib.md5(data, usedforsecurity=False).digest()
        best = min(best, time.perf_counter() - started)
    return size / best


def md5_from_machine(machine: dict[str, str]) -> float | None:
    """The MD5 rate (bytes per second) a Machine table recorded, if it did."""
    match = re.match(r"([\d,]+) MB/s", machine.get(MD5_ROW, ""))
    return float(match.group(1).replace(",", "")) * 1e6 if match else None


def describe_machine(
    programs: dict[str, str | None], storage: Path | None = None
) -> dict[str, str]:
    """What RESULTS.md says about the machine and the software under test (and the file
    system under `storage`, where the servers store locally)."""
    nginx = programs.get("nginx")
    wrk = programs.get("wrk")
    nginx_version = _first_line([nginx, "-v"]) if nginx else "not installed"
    wrk_version = _first_line([wrk, "--version"]) if wrk else "not installed"
    return {
        "CPU": cpu_model(),
        "cores": str(os.cpu_count()),
        "RAM": memory_total(),
        "kernel": platform.release(),
        **({"storage file system": file_system(storage)} if storage else {}),
        **({COMMIT_ROW: describe_commit(storage)} if storage else {}),
        MD5_ROW: f"{(rate := md5_rate()) / 1e6:,.0f} MB/s ({(1 << 30) / rate:.2f} CPU s per GiB)",
        "Python": platform.python_version(),
        "aiohttp": package_version("aiohttp"),
        "uvloop": package_version("uvloop"),
        "nginx": re.sub(r"^nginx version:\s*", "", nginx_version),
        "FastAPI": package_version("fastapi"),
        "Starlette": package_version("starlette"),
        "uvicorn": package_version("uvicorn"),
        "httptools": package_version("httptools"),
        "wrk": re.sub(r"\s*Copyright.*$", "", wrk_version),
    }


def raise_file_limit() -> None:
    """500 slow clients and 256 concurrent uploads need more descriptors than 1024."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 16384 if hard == resource.RLIM_INFINITY else min(hard, 16384)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


def dirty_bytes() -> int:
    """Page cache waiting to be written back (Dirty + Writeback in /proc/meminfo)."""
    total = 0
    with contextlib.suppress(OSError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(("Dirty:", "Writeback:")):
                total += int(line.split()[1]) * 1024
    return total
