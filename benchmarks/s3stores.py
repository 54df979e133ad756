"""The object stores the scale-out benchmark runs on: moto's S3 server and Ceph's RGW.

Both are started exactly as the test suite starts them (tests/s3support.py
`MotoServer`, tests/rgw.py `RgwServer`: a one-node Ceph cluster on loopback,
which needs root and Debian's Ceph packages), so the benchmark measures the
deployment the tests prove. What the benchmark needs beyond the tests' S3Server
is here: which processes are the store (their CPU is the store's cost), its
version, and how to empty a prefix between rounds without the emptying being
counted or the deleted bytes piling up in the store's memory.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.rgw import RgwServer
from tests.s3support import BUCKET, MotoServer, S3Server

from .system import package_version

KINDS = ("moto", "rgw")
TITLES = {"moto": "moto", "rgw": "Ceph RGW"}


@dataclass
class Store:
    """A running S3 server, as the benchmark measures it."""

    kind: str  # "moto" or "rgw"
    server: S3Server
    pids: list[int]  # the store's processes (RGW: monitor, OSD and gateway)
    version: str

    @property
    def title(self) -> str:
        return TITLES[self.kind]

    def empty(self, prefix: str) -> None:
        """Delete what the uploads left under `prefix`, straight at the store (not counted).

        RGW frees a deleted object's data only in its garbage collection, by default
        two hours later; the OSD keeps objects in memory (memstore), so the
        collection runs now, or rounds of uploads would fill the cluster."""
        client = self.server.client
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix):
            keys: list[Any] = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=BUCKET, Delete={"Objects": keys, "Quiet": True})
        if isinstance(self.server, RgwServer):
            self.server.collect_garbage()


def store_of(server: S3Server) -> Store:
    """The Store of a server already running (the benchmark's own, or a test session's)."""
    if isinstance(server, RgwServer):
        pids = [daemon.process.pid for daemon in server.daemons]
        return Store("rgw", server, pids, rgw_version())
    if isinstance(server, MotoServer):
        return Store("moto", server, [server.process.pid], package_version("moto"))
    raise TypeError(f"not a server the benchmark knows: {server!r}")


def rgw_version() -> str:
    """`16.2.15` from radosgw's `ceph version 16.2.15 (...) pacific (stable)`."""
    if shutil.which("radosgw") is None:
        return "not installed"
    done = subprocess.run(["radosgw", "--version"], capture_output=True, text=True, check=False)
    words = done.stdout.split()
    return words[2] if len(words) > 2 and words[:2] == ["ceph", "version"] else done.stdout.strip()


def missing_rgw_programs() -> list[str]:
    """What RGW needs and this machine lacks, as `program (Debian package)`."""
    return [
        f"{program} ({package})"
        for program, package in RgwServer.PROGRAMS.items()
        if shutil.which(program) is None
    ]


@contextlib.contextmanager
def running(kind: str, workdir: Path) -> Iterator[Store]:
    """Start the store of this kind for the benchmark, and stop it afterwards."""
    if kind == "moto":
        with MotoServer.running(workdir / "moto.log") as moto:
            yield store_of(moto)
    elif kind == "rgw":
        missing = missing_rgw_programs()
        if missing:
            raise RuntimeError(f"RGW needs {', '.join(missing)}: install them as root")
        # memstore's reported capacity; objects take memory only as they are written.
        with RgwServer.running(store_bytes=8 << 30) as rgw:
            yield store_of(rgw)
    else:
        raise ValueError(f"unknown S3 server {kind!r}: expected one of {', '.join(KINDS)}")
