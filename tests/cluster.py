"""Several `streamproxy serve` processes on one bucket behind nginx: a deployment in small.

Each instance is its own process with its own event loop and memory, sharing
nothing but the S3 prefix, as instances on different machines would. nginx
(Debian's nginx-light) balances round robin, streams request bodies through
unbuffered (`proxy_request_buffering off`: an upload reaches an instance as it
arrives, so a dead instance really dies mid-upload) and answers the same way,
takes any size (`client_max_body_size 0`: the instances enforce the cap), and
adds `X-Upstream` (the instance's address) to every answer, so a test can see
where each request went. It listens on 127.0.0.1 only and keeps its pid, logs
and temporary files in the cluster's own directory.

The tests use it through a fixture (test_scaleout.py); the scaling benchmark
(benchmarks/s3_scaleout.py) uses the same class.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import pwd
import re
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .s3support import free_port

NGINX_CANDIDATES = ("nginx", "/usr/sbin/nginx")
START_TIMEOUT = 30.0


def nginx_program() -> str | None:
    """The nginx binary, or None (the fixture then skips, naming the package)."""
    for candidate in NGINX_CANDIDATES:
        found = shutil.which(candidate)
        if found:
            return found
    return None


@dataclass
class Instance:
    """One `streamproxy serve` process, its URL and what it has logged so far."""

    index: int
    process: asyncio.subprocess.Process
    url: str
    log: list[str]
    log_reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    @property
    def address(self) -> str:
        """As nginx names it in `X-Upstream`."""
        return self.url.removeprefix("http://")

    def kill(self) -> None:
        """SIGKILL: no drain, no clean-up, as a machine that loses power."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


@dataclass
class Cluster:
    """`size` instances on `storage` (s3://bucket/prefix) at `endpoint`, nginx in front."""

    workdir: Path
    storage: str
    endpoint: str
    size: int = 3
    serve_args: tuple[str, ...] = ()
    instances: list[Instance] = field(default_factory=list)
    nginx_url: str = ""
    _nginx: asyncio.subprocess.Process | None = None

    async def start(self) -> Cluster:
        program = nginx_program()
        if program is None:
            raise RuntimeError("nginx is not installed (Debian: nginx-light)")
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self.instances = list(
                await asyncio.gather(*(self._spawn(index) for index in range(self.size)))
            )
            await self._start_nginx(program)
        except BaseException:
            await self.stop()
            raise
        return self

    async def _spawn(self, index: int) -> Instance:
        """One instance on a free port; its start-up line gives the port."""
        command = [
            sys.executable,
            "-m",
            "streamproxy",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--storage",
            self.storage,
            "--s3-endpoint",
            self.endpoint,
            *self.serve_args,
        ]
        process = await asyncio.create_subprocess_exec(
            *command,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # its own group: kill() reaches any worker too
        )
        assert process.stderr is not None
        log: list[str] = []
        while True:
            try:
                raw = await asyncio.wait_for(process.stderr.readline(), START_TIMEOUT)
            except TimeoutError:
                process.kill()
                raise RuntimeError(f"instance {index} did not start:\n" + "".join(log)) from None
            if not raw:
                raise RuntimeError(f"instance {index} exited at start:\n" + "".join(log))
            log.append(raw.decode(errors="replace"))
            match = re.search(r"listening on (http://[0-9.]+:\d+)", log[-1])
            if match:
                break
        instance = Instance(index, process, match.group(1), log)

        async def keep_reading() -> None:
            assert process.stderr is not None
            async for line in process.stderr:
                log.append(line.decode(errors="replace"))

        instance.log_reader = asyncio.ensure_future(keep_reading())
        return instance

    def nginx_config(self, port: int) -> str:
        temp = self.workdir / "nginx-temp"
        user = ""
        if os.geteuid() == 0:
            # A root master hands its workers to `nobody`, who cannot write our temp dirs.
            user = (
                f"user {pwd.getpwuid(os.geteuid()).pw_name} {grp.getgrgid(os.getegid()).gr_name};"
            )
        servers = "\n".join(f"        server {i.address};" for i in self.instances)
        return f"""# generated by tests/cluster.py
{user}
daemon off;
master_process on;
worker_processes 1;
pid {self.workdir}/nginx.pid;
error_log {self.workdir}/nginx-error.log warn;

events {{
    worker_connections 4096;
}}

http {{
    access_log {self.workdir}/nginx-access.log;
    client_max_body_size 0;
    client_body_temp_path {temp}/body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;

    upstream streamproxy {{
{servers}
        keepalive 64;
    }}

    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://streamproxy;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $http_host;
            proxy_request_buffering off;
            proxy_buffering off;
            proxy_read_timeout 300s;
            proxy_send_timeout 300s;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"""

    async def _start_nginx(self, program: str) -> None:
        (self.workdir / "nginx-temp").mkdir(exist_ok=True)
        port = free_port()
        config = self.workdir / "nginx.conf"
        config.write_text(self.nginx_config(port))
        log_path = self.workdir / "nginx-error.log"
        self._nginx = await asyncio.create_subprocess_exec(
            program,
            "-p",
            str(self.workdir),
            "-c",
            str(config),
            "-e",
            str(log_path),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,
        )
        self.nginx_url = f"http://127.0.0.1:{port}"
        deadline = asyncio.get_running_loop().time() + START_TIMEOUT
        while True:
            if self._nginx.returncode is not None:
                text = log_path.read_text(errors="replace") if log_path.exists() else ""
                raise RuntimeError(f"nginx exited at start:\n{text}")
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                return
            if asyncio.get_running_loop().time() > deadline:
                raise RuntimeError("nginx did not listen in time")
            await asyncio.sleep(0.05)

    def pids(self) -> list[int]:
        """The instances' process ids (each may have workers below it)."""
        return [instance.pid for instance in self.instances]

    @property
    def nginx_pid(self) -> int | None:
        return None if self._nginx is None else self._nginx.pid

    async def stop(self) -> None:
        """Everything down: SIGTERM, then SIGKILL for what lingers."""
        processes = [instance.process for instance in self.instances]
        if self._nginx is not None:
            processes.append(self._nginx)
        for process in processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 15)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                await process.wait()
        for instance in self.instances:
            if instance.log_reader is not None:
                instance.log_reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await instance.log_reader
