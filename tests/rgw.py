"""Ceph's RADOS Gateway for the tests: a one-node cluster on loopback, started once per session.

moto is a test double; RGW is an object store people run. This lays out Ceph's
manual deployment (docs.ceph.com, "Manual Deployment") in a temporary directory:

1. `ceph.conf`: one monitor on a loopback port, no authentication (nothing
   leaves 127.0.0.1), pools of size 1, few placement groups, messenger v2 only.
2. The monitor: `monmaptool --create`, `ceph-mon --mkfs`, then `ceph-mon -f`.
3. One OSD on memstore (objects in the daemon's memory, no disk or loop device):
   `ceph osd new`, `ceph-osd --mkfs`, then `ceph-osd -f`; it joins the CRUSH map
   by itself. No manager: the OSD and the gateway work without one.
4. The gateway: `radosgw -f` with the beast frontend on a loopback port; it
   creates its pools on first start. Then an S3 user made with `radosgw-admin`
   whose keys are the fake ones the suite already exports (s3support.FAKE_AWS),
   so the service under test needs no other credentials, and the test bucket.

Every daemon runs in the foreground as our child, in a session of its own, and
is stopped (then killed) at the end; the directory goes with it.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .s3support import BUCKET, FAKE_AWS, free_port, loopback_client

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

START_TIMEOUT = 120.0

CONFIG = """\
[global]
fsid = {fsid}
mon host = v2:127.0.0.1:{mon_port}
mon initial members = a
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind msgr1 = false
# No cephx on loopback; the daemons' default of "secure" mode needs it, so crc.
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc
run dir = {root}/run
admin socket = {root}/run/$name.asok
pid file = {root}/run/$name.pid
log file = {root}/log/$name.log
mon data = {root}/mon.$id
osd data = {root}/osd.$id
# A disk that fills up must not stop the monitor in the middle of a test run.
mon data avail crit = 0
mon data avail warn = 0
# One OSD: pools of one copy, placed on that OSD, and few placement groups
# (the gateway makes about eight pools; the default 32 each would pass the
# per-OSD limit).
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
# The gateway creates its pools one after the other, each waiting for a new
# OSD map: propose map changes at once rather than batching them for a second.
paxos propose interval = 0.01
paxos min wait = 0.01
# Objects in the OSD's memory: no disk, no loop device, nothing to clean up.
osd objectstore = memstore
memstore device bytes = {store_bytes}

[client.rgw]
rgw data = {root}/rgw
rgw frontends = beast endpoint=127.0.0.1:{rgw_port}
rgw thread pool size = 64
rgw dns name = 127.0.0.1
"""


@dataclass
class CephDaemon:
    name: str
    process: subprocess.Popen[bytes]


@dataclass
class RgwServer:
    """A running one-node Ceph cluster with its gateway, the test bucket in it."""

    # The programs it runs and the Debian package of each (ceph-base and
    # ceph-common come with ceph-mon as dependencies).
    PROGRAMS: ClassVar[dict[str, str]] = {
        "ceph-mon": "ceph-mon",
        "ceph-osd": "ceph-osd",
        "radosgw": "radosgw",
        "monmaptool": "ceph-base",
        "ceph": "ceph-common",
        "radosgw-admin": "ceph-common",
    }

    root: Path
    port: int
    daemons: list[CephDaemon] = field(default_factory=list)
    _client: Any = field(default=None, repr=False)

    @property
    def conf(self) -> Path:
        return self.root / "ceph.conf"

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def client(self) -> S3Client:
        if self._client is None:
            self._client = loopback_client(self.endpoint)
        return self._client  # type: ignore[no-any-return]

    @classmethod
    @contextlib.contextmanager
    def running(cls, store_bytes: int = 4 << 30) -> Iterator[RgwServer]:
        """Start the cluster, yield it, and stop it and remove its directory afterwards.

        `store_bytes` is the capacity memstore reports; objects take memory only as
        they are written, and the cluster refuses writes near that size."""
        root = Path(tempfile.mkdtemp(prefix="streamproxy-ceph-"))
        server = cls(root, free_port())
        try:
            server._start(free_port(), store_bytes)
            yield server
        finally:
            server._stop()
            shutil.rmtree(root, ignore_errors=True)

    # --- start-up, step by step ----------------------------------------------------

    def _start(self, mon_port: int, store_bytes: int) -> None:
        root, fsid = self.root, str(uuid.uuid4())
        for directory in ("run", "log", "rgw", "mon.a", "osd.0"):
            (root / directory).mkdir()
        self.conf.write_text(
            CONFIG.format(
                fsid=fsid,
                mon_port=mon_port,
                root=root,
                store_bytes=store_bytes,
                rgw_port=self.port,
            )
        )
        deadline = time.monotonic() + START_TIMEOUT
        self._run("monmaptool", "--create", "--fsid", fsid, "--addv", "a",
                  f"[v2:127.0.0.1:{mon_port}]", str(root / "monmap"))  # fmt: skip
        self._run("ceph-mon", "--mkfs", "-i", "a", "--monmap", str(root / "monmap"))
        self._daemon("mon.a", "ceph-mon", "-i", "a")

        osd_uuid = str(uuid.uuid4())
        osd_id = self._run("ceph", "--connect-timeout", "30", "osd", "new", osd_uuid).strip()
        if osd_id != "0":
            raise RuntimeError(f"ceph osd new answered {osd_id!r}, expected 0")
        self._run("ceph-osd", "--mkfs", "-i", "0", "--osd-uuid", osd_uuid)
        self._daemon("osd.0", "ceph-osd", "-i", "0")
        self._wait("the OSD to come up", self._osd_up, deadline)

        self._daemon("client.rgw", "radosgw", "-n", "client.rgw")
        self._wait("the gateway to answer", self._gateway_answers, deadline)
        self._run("radosgw-admin", "user", "create", "--uid", "streamproxy-test",
                  "--display-name", "streamproxy tests",
                  "--access-key", FAKE_AWS["AWS_ACCESS_KEY_ID"],
                  "--secret-key", FAKE_AWS["AWS_SECRET_ACCESS_KEY"])  # fmt: skip
        self.client.create_bucket(Bucket=BUCKET)

    def collect_garbage(self) -> None:
        """Free deleted objects' data now, not after RGW's two-hour wait (benchmarks delete
        rounds of uploads, and memstore keeps the data in memory until then)."""
        self._run("radosgw-admin", "gc", "process", "--include-all")

    def _run(self, program: str, *args: str) -> str:
        """A set-up command with our ceph.conf; its output, or an error with what it said."""
        done = subprocess.run(
            [program, "-c", str(self.conf), *args], capture_output=True, timeout=60
        )
        if done.returncode != 0:
            said = (done.stdout + done.stderr).decode(errors="replace")[-2000:]
            raise RuntimeError(f"{program} {' '.join(args)} failed ({done.returncode}):\n{said}")
        return done.stdout.decode()

    def _daemon(self, name: str, program: str, *args: str) -> None:
        with open(self.root / "log" / f"{name}.out", "wb") as out:
            process = subprocess.Popen(
                [program, "-f", "-c", str(self.conf), *args],
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.daemons.append(CephDaemon(name, process))

    def _wait(self, what: str, ready: Callable[[], bool], deadline: float) -> None:
        while not ready():
            for daemon in self.daemons:
                if daemon.process.poll() is not None:
                    raise RuntimeError(f"{daemon.name} exited while waiting for {what}:\n"
                                       + self._log_tail(daemon.name))  # fmt: skip
            if time.monotonic() > deadline:
                raise RuntimeError(f"timed out waiting for {what}")
            time.sleep(0.2)

    def _osd_up(self) -> bool:
        status = json.loads(self._run("ceph", "osd", "stat", "--format", "json"))
        return int(status.get("num_up_osds", 0)) == 1

    def _gateway_answers(self) -> bool:
        try:
            urllib.request.urlopen(self.endpoint + "/", timeout=1).close()
        except urllib.error.HTTPError:
            return True  # any HTTP answer will do
        except (urllib.error.URLError, OSError):
            return False
        return True

    def _log_tail(self, name: str) -> str:
        lines: list[str] = []
        for path in (self.root / "log" / f"{name}.out", self.root / "log" / f"{name}.log"):
            with contextlib.suppress(OSError):
                lines += path.read_text(errors="replace").splitlines()[-15:]
        return "\n".join(lines)

    def _stop(self) -> None:
        """Stop every daemon at once: the cluster is thrown away, so nothing needs an order.

        The gateway's orderly shutdown can take ten seconds; whatever is still
        running after a few is killed (memstore keeps nothing worth saving)."""
        for daemon in self.daemons:
            if daemon.process.poll() is None:
                daemon.process.terminate()
        deadline = time.monotonic() + 3
        for daemon in self.daemons:
            try:
                daemon.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                daemon.process.kill()
                daemon.process.wait()
