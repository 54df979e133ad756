"""The three servers under test, each started on loopback with its own temp directories.

- nginx: Debian's nginx-light with a generated config (2 workers, sendfile, WebDAV PUT
  into a temp directory, no access log), run in the foreground as our child so its
  master and workers form one process tree we can measure.
- streamproxy: `python -m streamproxy serve` on local storage, access log off.
- FastAPI + uvicorn: `benchmarks.peer_fastapi`, the server a Python user would pick.

Every server takes uploads (PUT for nginx, multipart POST for the others) and serves
downloads with ranges; the harness only needs the URLs from here. Two more rows of
streamproxy isolate costs in the same run: `streamproxy-nofsync` (its own process, with
`--fsync false`) and `streamproxy-raw` (the `streamproxy` process itself, sent the
raw-body `PUT /files?conversationId=..&fileName=..` instead of the multipart POST).
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import signal
import socket
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .procstat import process_tree

REPO_ROOT = Path(__file__).resolve().parent.parent
CONVERSATION_ID = "bench"
START_TIMEOUT = 30.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def metric_total(text: str, name: str, **labels: str) -> float:
    """The sum of the samples called `name` (with these labels, and any others) in a
    /metrics page, read by prometheus-client's own parser."""
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


class ServerFailed(RuntimeError):
    """A server did not start, or died; the message holds the end of its log."""


class Server:
    """A server process on 127.0.0.1; subclasses say how to start it and its URLs."""

    name = "server"
    multipart = True  # uploads as multipart/form-data POST; nginx takes a plain PUT
    answers_with_name = True  # the upload's answer is JSON with the stored name and size
    serves_downloads = True  # given the download scenarios' fixtures when it starts
    ready_path = "/"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir / self.name
        self.storage = self.workdir / "storage"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / "server.log"
        self._process: asyncio.subprocess.Process | None = None
        self._log_file: int | None = None

    # -- what subclasses provide ------------------------------------------------------
    def command(self) -> list[str]:
        raise NotImplementedError

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def prepare(self) -> None:
        """Create directories and config files before the process starts."""
        self.storage.mkdir(parents=True, exist_ok=True)

    def upload_url(self, name: str) -> str:
        return self.base_url + "/files"

    def download_url(self, stored_name: str) -> str:
        return f"{self.base_url}/files/download?filename={quote(stored_name, safe='')}"

    async def hashing_seconds(self, session: aiohttp.ClientSession) -> float | None:
        """Seconds the server has spent hashing received files so far; None: it does not
        say (the peers)."""
        return None

    def uploaded_files(self) -> list[Path]:
        """Files uploads have left in storage (the harness deletes them between runs)."""
        return [path for path in self.storage.iterdir() if path.is_file()]

    # -- lifecycle ----------------------------------------------------------------------
    @property
    def pid(self) -> int:
        if self._process is None:
            raise ServerFailed(f"{self.name} is not running")
        return self._process.pid

    def pids(self) -> list[int]:
        return process_tree(self.pid)

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        self._log_file = os.open(self.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._process = await asyncio.create_subprocess_exec(
            *self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=self._log_file,
            env=self.environment(),
            cwd=REPO_ROOT,
            start_new_session=True,  # a Ctrl-C at the terminal reaches the harness only
        )
        await self._wait_ready()

    async def _wait_ready(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        async with aiohttp.ClientSession() as session:
            while True:
                assert self._process is not None
                if self._process.returncode is not None:
                    raise ServerFailed(
                        f"{self.name} exited with {self._process.returncode}:\n{self.log_tail()}"
                    )
                with contextlib.suppress(aiohttp.ClientError, OSError):
                    async with session.get(self.base_url + self.ready_path) as response:
                        await response.read()
                        if response.status < 500:
                            return
                if loop.time() > deadline:
                    raise ServerFailed(f"{self.name} did not answer in {START_TIMEOUT:g}s")
                await asyncio.sleep(0.1)

    def check_alive(self) -> None:
        if self._process is None or self._process.returncode is not None:
            raise ServerFailed(f"{self.name} is not running:\n{self.log_tail()}")

    async def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        if self._log_file is not None:
            os.close(self._log_file)
            self._log_file = None


class Nginx(Server):
    """nginx-light: 2 workers, sendfile, WebDAV PUT; the reference for every ratio."""

    name = "nginx"
    multipart = False
    answers_with_name = False

    def __init__(self, workdir: Path, program: str) -> None:
        super().__init__(workdir)
        self.program = program
        self.config_path = self.workdir / "nginx.conf"

    def config(self) -> str:
        temp = self.workdir / "temp"
        user = ""
        if os.geteuid() == 0:
            # A root master would hand the workers to `nobody`, who cannot write our
            # temp directories: keep them as the user that owns them.
            user = (
                f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
            )
        return f"""# generated by benchmarks/servers.py for one benchmark run
{user}
daemon off;
master_process on;
worker_processes 2;
worker_rlimit_nofile 16384;
pid {self.workdir}/nginx.pid;
error_log {self.workdir}/error.log warn;

events {{
    worker_connections 8192;
}}

http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    client_max_body_size 0;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    default_type application/octet-stream;

    server {{
        listen 127.0.0.1:{self.port};
        root {self.storage};
        location / {{
            dav_methods PUT;
            create_full_put_path on;
            dav_access user:rw group:r all:r;
        }}
    }}
}}
"""

    def prepare(self) -> None:
        super().prepare()
        (self.workdir / "temp").mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config())

    def command(self) -> list[str]:
        return [
            self.program,
            "-p",
            str(self.workdir),
            "-c",
            str(self.config_path),
            "-e",
            str(self.workdir / "error.log"),
        ]

    def log_tail(self, lines: int = 20) -> str:
        tail = super().log_tail(lines)
        with contextlib.suppress(OSError):
            errors = (self.workdir / "error.log").read_text(errors="replace").splitlines()
            tail += "\n" + "\n".join(errors[-lines:])
        return tail

    def upload_url(self, name: str) -> str:
        return f"{self.base_url}/{quote(name)}"

    def download_url(self, stored_name: str) -> str:
        return f"{self.base_url}/{quote(stored_name)}"


class Streamproxy(Server):
    """The service under test, as `python -m streamproxy serve` with the defaults
    (fsync on, MD5 computed) and the access log off, like the peers'."""

    name = "streamproxy"
    ready_path = "/healthz"

    def __init__(self, workdir: Path, extra_args: list[str]) -> None:
        super().__init__(workdir)
        self.extra_args = extra_args

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "streamproxy",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--storage",
            str(self.storage),
            "--max-size",
            "2G",
            "--log-level",
            "warning",
            # The URL import's source is nginx on loopback, refused by default.
            "--fetch-allow",
            "127.0.0.1/32",
            *self.extra_args,
        ]

    async def hashing_seconds(self, session: aiohttp.ClientSession) -> float | None:
        """`streamproxy_hashing_seconds_total` over every kind, from /metrics (all workers)."""
        async with session.get(self.base_url + "/metrics") as response:
            return metric_total(await response.text(), "streamproxy_hashing_seconds_total")

    def uploaded_files(self) -> list[Path]:
        files = super().uploaded_files()
        meta = self.storage / ".meta"
        if meta.is_dir():
            files += [path for path in meta.iterdir() if path.is_file()]
        return files


class StreamproxyNoFsync(Streamproxy):
    """streamproxy with `--fsync false`: not in the default set; it shows what the
    durability of a 200 costs next to peers that do not flush."""

    name = "streamproxy-nofsync"

    def __init__(self, workdir: Path, extra_args: list[str]) -> None:
        super().__init__(workdir, ["--fsync", "false", *extra_args])


class StreamproxyTwoWorkers(Streamproxy):
    """streamproxy with `--workers 2`, two processes on one port as nginx runs two
    workers: in the default set for the many-requests scenarios, where one event
    loop is the bound, and left out where one transfer runs in one process anyway."""

    name = "streamproxy-2w"

    def __init__(self, workdir: Path, extra_args: list[str]) -> None:
        super().__init__(workdir, ["--workers", "2", *extra_args])


class FastAPIPeer(Server):
    """FastAPI + uvicorn (uvloop and httptools when installed), one process, as a
    Python user would deploy it; its `UploadFile` spools to TMPDIR, set to our temp dir."""

    name = "fastapi"
    ready_path = "/healthz"

    def environment(self) -> dict[str, str]:
        return {
            **os.environ,
            "BENCH_FASTAPI_STORAGE": str(self.storage),
            "TMPDIR": str(self.workdir / "spool"),
        }

    def prepare(self) -> None:
        super().prepare()
        (self.workdir / "spool").mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "uvicorn",
            "benchmarks.peer_fastapi:app",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--no-access-log",
            "--log-level",
            "warning",
            "--timeout-keep-alive",
            "75",
        ]


class FloorPeer(Server):
    """`benchmarks.peer_floor` as a server process; `durable=False` stores nothing.

    The durable floor is a row of the 5 KB upload scenario: the rate an aiohttp
    application that hashes and stores durably can reach, in the same run (the bound
    of issue 13's 5 KB target); `benchmarks.floor` runs both, for A/B work."""

    ready_path = "/files/download?filename=ready"
    serves_downloads = False  # in the harness only for uploads: no fixtures to store

    def __init__(self, workdir: Path, *, durable: bool = True) -> None:
        self.name = "floor" if durable else "floor-nodisk"
        self.durable = durable
        super().__init__(workdir)

    def prepare(self) -> None:
        super().prepare()
        (self.storage / "ready").write_bytes(b"ready")

    def environment(self) -> dict[str, str]:
        return {**os.environ, "BENCH_FLOOR_DURABLE": "1" if self.durable else "0"}

    def command(self) -> list[str]:
        return [sys.executable, "-m", "benchmarks.peer_floor", str(self.port), str(self.storage)]


class StreamproxyRawPut(Server):
    """The `streamproxy` process itself, sent the raw-body upload `PUT
    /files?conversationId=ID&fileName=NAME` (no multipart envelope), as nginx is sent a
    PUT: the same process, so the difference from the multipart row is the route alone."""

    name = "streamproxy-raw"
    multipart = False

    def __init__(self, of: Streamproxy) -> None:
        self.of = of
        self.workdir = of.workdir
        self.storage = of.storage
        self.port = of.port
        self.base_url = of.base_url
        self.log_path = of.log_path
        self._process = None
        self._log_file = None

    def upload_url(self, name: str) -> str:
        query = f"conversationId={quote(CONVERSATION_ID)}&fileName={quote(name, safe='')}"
        return f"{self.base_url}/files?{query}"

    def uploaded_files(self) -> list[Path]:
        return self.of.uploaded_files()

    async def hashing_seconds(self, session: aiohttp.ClientSession) -> float | None:
        return await self.of.hashing_seconds(session)

    @property
    def pid(self) -> int:
        return self.of.pid

    def check_alive(self) -> None:
        self.of.check_alive()

    async def start(self) -> None:
        self.of.check_alive()  # nothing to start: the row rides on streamproxy's process

    async def stop(self) -> None:
        return None
