"""Shared fixtures: a real streamproxy on loopback, over each storage kind, and clients for it.

Skips for a missing package or capability fail when CI=true (capabilities.py).
Every test that starts a service runs on a local directory (`local`) and on S3
through moto's server (`moto`), unless marked `local_only` or `s3_only`. Tests
that exercise S3 behaviour, where servers differ (publication without replacing,
multipart, conditional writes, listing, erasure, resumable records, claims), also
run on Ceph's RADOS Gateway (`rgw`, a one-node cluster started once per session,
rgw.py): every `s3_only` test, and those marked `every_s3_server`. The rest
(refusals before storage, URL fetching, the client, downloads' HTTP rules) runs
the same storage code on both servers, so RGW would only double their time.
STREAMPROXY_TEST_S3=moto or =rgw runs the S3 tests on that server only (=rgw
runs every S3-capable test on RGW); with =rgw a skipped RGW test fails
(capabilities.py), as in CI.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from streamproxy import create_app
from streamproxy.intake.transfers import TRANSFERS
from streamproxy.runtime.metrics import METRICS
from streamproxy.runtime.settings import Settings

# The hooks make a skip for a missing need fail when CI=true; require_program is
# re-exported (the tests import it from here).
from .capabilities import pytest_make_collect_report as pytest_make_collect_report
from .capabilities import pytest_runtest_makereport as pytest_runtest_makereport
from .capabilities import require_program as require_program
from .guardedserver import GuardedTestServer

# The S3 servers, as fixtures for every test (s3servers.py).
from .s3servers import fake_aws_credentials as fake_aws_credentials
from .s3servers import moto_server as moto_server
from .s3servers import rgw_server as rgw_server
from .s3servers import s3_kinds
from .s3servers import s3_server as s3_server
from .s3support import BUCKET, S3Server, S3Store


class LocalStore:
    """What a local storage directory holds, seen from outside the service."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def stored_names(self) -> set[str]:
        return {p.name for p in self.root.iterdir() if not p.name.startswith(".")}

    def temporaries(self) -> list[str]:
        return sorted(p.name for p in (self.root / ".tmp").iterdir())

    def meta_names(self) -> set[str]:
        """Names that have metadata: attached to the file, or in a sidecar in .meta."""
        attached = {name for name in self.stored_names() if self.attached_metadata(name)}
        sidecars = {p.name.removesuffix(".json") for p in (self.root / ".meta").iterdir()}
        return attached | sidecars

    def attached_metadata(self, name: str) -> bytes | None:
        try:
            return os.getxattr(self.root / name, "user.streamproxy", follow_symlinks=False)
        except OSError:
            return None

    def metadata(self, name: str) -> bytes:
        """A stored file's metadata document, wherever the storage keeps it."""
        return self.attached_metadata(name) or (self.root / ".meta" / f"{name}.json").read_bytes()


Store = LocalStore | S3Store


@dataclass
class Service:
    """A running service: its base URL, what its storage holds, and a client session.

    The inspection methods work on either storage; `root` only on local storage
    (a test that needs it is marked `local_only`).
    """

    url: str
    store: Store
    settings: Settings
    session: aiohttp.ClientSession
    server: TestServer

    @property
    def kind(self) -> str:
        return "local" if isinstance(self.store, LocalStore) else "s3"

    @property
    def root(self) -> Path:
        if not isinstance(self.store, LocalStore):
            raise AssertionError("a storage directory exists only for local storage: local_only")
        return self.store.root

    @property
    def port(self) -> int:
        assert self.server.port is not None
        return self.server.port

    def in_flight(self) -> int:
        """Transfers the service is handling right now."""
        return self.server.app[TRANSFERS].in_flight

    def metric(self, sample: str, **labels: str) -> float:
        """A sample of the service's metrics, read in process (0 when absent)."""
        value = self.server.app[METRICS].registry.get_sample_value(sample, labels)
        return value or 0.0

    def taken(self) -> float:
        """Upload body bytes the service has taken in so far (its received-bytes metric):
        a byte counted here is past aiohttp's buffers, so a broken request keeps it."""
        return self.metric("streamproxy_received_bytes_total", kind="upload")

    def stored_names(self) -> set[str]:
        """Visible files: what a download could return."""
        return self.store.stored_names()

    def temporaries(self) -> list[str]:
        """Staged bytes: temporary files, or S3 staging objects and multipart uploads."""
        return self.store.temporaries()

    def meta_names(self) -> set[str]:
        return self.store.meta_names()

    def assert_nothing_stored(self) -> None:
        assert self.stored_names() == set()
        assert self.meta_names() == set()
        assert self.temporaries() == []

    def assert_clean(self, expected: set[str]) -> None:
        """Exactly these files are stored, each with metadata, and no temporary is left."""
        assert self.stored_names() == expected
        assert self.meta_names() == expected
        assert self.temporaries() == []

    async def upload(
        self,
        data: bytes,
        filename: str | None = "file.bin",
        conversation_id: str | None = "11111",
        content_type: str | None = None,
        path: str = "/files",
        headers: dict[str, str] | None = None,
        via: str = "multipart",
    ) -> aiohttp.ClientResponse:
        """Upload as a form (`via="multipart"`), or as the raw body of a `PUT` or a
        non-multipart `POST` (`via="put"`, `via="post"`) with the names in the query."""
        if via != "multipart":
            return await self.upload_raw(
                data, filename, conversation_id, content_type, path, headers, via.upper()
            )
        form = aiohttp.FormData()
        if conversation_id is not None:
            form.add_field("conversationId", conversation_id)
        form.add_field("file", data, filename=filename, content_type=content_type)
        async with self.session.post(self.url + path, data=form, headers=headers) as response:
            await response.read()
            return response

    async def upload_raw(
        self,
        data: bytes,
        filename: str | None = "file.bin",
        conversation_id: str | None = "11111",
        content_type: str | None = None,
        path: str = "/files",
        headers: dict[str, str] | None = None,
        method: str = "PUT",
    ) -> aiohttp.ClientResponse:
        """The raw-body upload; without `content_type`, aiohttp's application/octet-stream."""
        query = {"conversationId": conversation_id, "fileName": filename}
        params = {name: value for name, value in query.items() if value is not None}
        sent = dict(headers or {})
        if content_type is not None:
            sent["Content-Type"] = content_type
        async with self.session.request(
            method, self.url + path, params=params, data=data, headers=sent
        ) as response:
            await response.read()
            return response

    async def upload_json(self, data: bytes, **kwargs: Any) -> dict[str, Any]:
        response = await self.upload(data, **kwargs)
        assert response.status == 200, await response.text()
        result: dict[str, Any] = await response.json()
        return result

    async def fetch(self, name: str, headers: dict[str, str] | None = None) -> bytes:
        async with self.session.get(
            self.url + "/files/download", params={"filename": name}, headers=headers
        ) as response:
            assert response.status == 200, await response.text()
            return await response.read()


ServiceFactory = Callable[..., Awaitable[Service]]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "local_only: runs on local storage only (say why)")
    config.addinivalue_line("markers", "s3_only: runs on S3 storage only, on every S3 server")
    config.addinivalue_line(
        "markers", "every_s3_server: exercises S3 behaviour, so runs on RGW as well as moto"
    )


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that starts a service runs once per storage kind (ids `local`, `moto`, `rgw`)."""
    if "storage_kind" not in metafunc.fixturenames:
        return
    marked = metafunc.definition.get_closest_marker
    servers = s3_kinds()
    if not (marked("s3_only") or marked("every_s3_server")) and len(servers) > 1:
        servers = ("moto",)  # storage-neutral: one S3 server is enough
    kinds: tuple[str, ...] = ("local", *servers)
    if marked("local_only"):
        kinds = ("local",)
    elif marked("s3_only"):
        kinds = servers
    metafunc.parametrize("storage_kind", kinds)


def _s3_prefix(root: Path) -> str:
    """One prefix per storage root a test names, so two services given one root share it."""
    return "t-" + hashlib.sha1(str(root).encode()).hexdigest()[:16] + "/"


@pytest.fixture
async def start_service(
    tmp_path: Path, storage_kind: str, request: pytest.FixtureRequest
) -> AsyncIterator[ServiceFactory]:
    """Start services with settings overrides; all are stopped at the end of the test.

    `root=PATH` names the storage: a directory, or for S3 a prefix derived from it
    (two services given the same root share their files). `storage=`, and for S3
    `s3_endpoint=`, override that outright.
    """
    started: list[tuple[TestServer, aiohttp.ClientSession]] = []
    s3: S3Server | None = None
    if storage_kind != "local":
        s3 = request.getfixturevalue("s3_server")

    async def start(**overrides: Any) -> Service:
        root = Path(overrides.pop("root", tmp_path / f"data{len(started)}"))
        # A test's own hook on the app before it starts (signals, recording middleware).
        prepare: Callable[[web.Application], None] | None = overrides.pop("prepare", None)
        store: Store
        if s3 is None:
            overrides.setdefault("storage", str(root))
            store = LocalStore(Path(overrides["storage"]))
        else:
            overrides.setdefault("storage", f"s3://{BUCKET}/{_s3_prefix(root)}")
            overrides.setdefault("s3_endpoint", s3.endpoint)
            prefix = overrides["storage"].removeprefix(f"s3://{BUCKET}/").strip("/") + "/"
            store = S3Store(s3, prefix)
        settings = Settings(**overrides)
        app = create_app(settings)
        if prepare is not None:
            prepare(app)
        server = GuardedTestServer(app, host="127.0.0.1", port=0)
        await server.start_server()
        session = aiohttp.ClientSession()
        started.append((server, session))
        url = f"http://127.0.0.1:{server.port}"
        return Service(url, store, settings, session, server)

    yield start
    for server, session in started:
        await session.close()
        await server.close()


@pytest.fixture
async def service(start_service: ServiceFactory) -> Service:
    """The service with default settings (5 MiB cap, no keys, no type rules)."""
    return await start_service()


async def eventually(condition: Callable[[], bool], seconds: float = 10) -> None:
    """Wait until `condition()` holds: the server works in its own time, even on a busy machine."""
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def random_bytes(size: int, seed: int = 0) -> bytes:
    """Deterministic incompressible bytes (a digest chain), so failures repeat exactly."""
    out = bytearray()
    block = seed.to_bytes(8, "big")
    while len(out) < size:
        block = hashlib.sha512(block).digest()
        out += block
    return bytes(out[:size])


async def run_program(*args: str, cwd: Path | None = None) -> tuple[int, bytes, bytes]:
    """Run a program without blocking the event loop the server under test runs on."""
    process = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=cwd
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode is not None
    return process.returncode, stdout, stderr


async def read_response(reader: asyncio.StreamReader) -> bytes:
    """One HTTP response (head and Content-Length body), without waiting for the connection end."""
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return head + await asyncio.wait_for(reader.readexactly(length), 30)


async def raw_request(port: int, head: bytes, body_parts: list[bytes], pause: float = 0.0) -> bytes:
    """Send a hand-made HTTP request over a plain socket; return the server's response.

    With `pause`, each body part goes out that many seconds after the one before,
    so the server reads them separately."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        for index, part in enumerate(body_parts):
            if pause and index:
                await asyncio.sleep(pause)
            writer.write(part)
            await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


def multipart_body(
    boundary: str, parts: list[tuple[dict[str, str], bytes]], preamble: bytes = b""
) -> bytes:
    """A multipart/form-data body from (headers, content) pairs, for hand-made requests."""
    out = bytearray(preamble)
    for headers, content in parts:
        out += f"--{boundary}\r\n".encode()
        for name, value in headers.items():
            out += f"{name}: {value}\r\n".encode()
        out += b"\r\n" + content + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def file_part(data: bytes, filename: str = "a.bin", content_type: str = "application/octet-stream"):
    return (
        {
            "Content-Disposition": f'form-data; name="file"; filename="{filename}"',
            "Content-Type": content_type,
        },
        data,
    )


def field_part(name: str, value: str):
    return ({"Content-Disposition": f'form-data; name="{name}"'}, value.encode())


# The ways to upload one file: a form, and the body itself (API.md's PUT, and POST
# with a Content-Type that is not multipart); tests of rules shared by all take `via`.
VIAS = ("multipart", "put")


def upload_head(via: str, length: int | None, extra: str = "", name: str = "a.bin") -> bytes:
    """A hand-made upload's head: a form with boundary `b`, or a raw PUT of `1_{name}`."""
    if via == "multipart":
        return http_post_head("/files", "b", length, extra)
    length_header = f"Content-Length: {length}\r\n" if length is not None else ""
    return (
        f"PUT /files?conversationId=1&fileName={name} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: application/octet-stream\r\n{length_header}{extra}"
        "Connection: close\r\n\r\n"
    ).encode()


def upload_body(via: str, data: bytes, name: str = "a.bin") -> bytes:
    """The body that goes with `upload_head`: the form (conversationId 1) or `data` itself."""
    if via == "multipart":
        return multipart_body("b", [field_part("conversationId", "1"), file_part(data, name)])
    return data


def http_post_head(path: str, boundary: str, length: int | None, extra: str = "") -> bytes:
    length_header = f"Content-Length: {length}\r\n" if length is not None else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Content-Type: multipart/form-data; boundary={boundary}\r\n"
        f"{length_header}{extra}Connection: close\r\n\r\n"
    ).encode()


@dataclass
class ServerProcess:
    """`streamproxy serve` in a child process, for what needs a whole process: signals, RSS."""

    process: asyncio.subprocess.Process
    url: str
    log: list[str]
    log_reader: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int:
        return self.process.pid


async def spawn_server(
    *args: str, prefix: tuple[str, ...] = (), env: dict[str, str] | None = None
) -> ServerProcess:
    """Start the command-line server on a free port and wait for its start-up line."""
    command = [*prefix, sys.executable, "-m", "streamproxy", "serve", "--port", "0", *args]
    process = await asyncio.create_subprocess_exec(
        *command,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
        start_new_session=True,  # a group of its own: teardown can end its workers too
    )
    assert process.stderr is not None
    log: list[str] = []
    while True:
        line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode()
        if not line:
            raise RuntimeError("server exited before listening:\n" + "".join(log))
        log.append(line)
        match = re.search(r"listening on (http://[0-9.]+:\d+)", line)
        if match:
            break
    server = ServerProcess(process, match.group(1), log)

    async def drain() -> None:
        assert process.stderr is not None
        async for raw in process.stderr:
            log.append(raw.decode())

    server.log_reader = asyncio.ensure_future(drain())
    return server


async def upload_across_sigterm(
    server: ServerProcess, storage: Path, request: bytes, sent: int
) -> bytes:
    """Send the first `sent` bytes of an upload `request`; once the server stages it,
    SIGTERM the server; send the rest and return the answer (the drain should let
    the upload finish)."""
    port = int(server.url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request[:sent])
        await writer.drain()
        await eventually(lambda: staged_files(server.pid, storage) == 1)
        server.process.terminate()
        await eventually(lambda: any("shutting down" in line for line in server.log))
        writer.write(request[sent:])
        return await asyncio.wait_for(reader.read(), 20)
    finally:
        writer.close()


def staged_files(pid: int, root: Path) -> int:
    """Files a server process (or its workers) has open in `root/.tmp`: uploads under way.

    Unnamed temporaries (O_TMPFILE) have no name to list, but /proc shows them.
    """
    tmp = str(root / ".tmp") + "/"
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(child) for child in children.read_text().split()]
    count = 0
    for process in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{process}/fd"):
                with contextlib.suppress(OSError):
                    count += os.readlink(f"/proc/{process}/fd/{fd}").startswith(tmp)
    return count


async def stop_server(server: ServerProcess, sig: int = signal.SIGTERM) -> int:
    if server.process.returncode is None:
        server.process.send_signal(sig)
    return await asyncio.wait_for(server.process.wait(), 30)


@pytest.fixture
async def spawn() -> AsyncIterator[Callable[..., Awaitable[ServerProcess]]]:
    """Start command-line servers; whatever a test leaves running is killed afterwards."""
    spawned: list[ServerProcess] = []

    async def start(*args: str, **kwargs: Any) -> ServerProcess:
        server = await spawn_server(*args, **kwargs)
        spawned.append(server)
        return server

    yield start
    for server in spawned:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.process.pid, signal.SIGKILL)
        await server.process.wait()


@pytest.fixture
async def receiver() -> AsyncIterator[Any]:
    """A running webhook receiver (tests/webhooks.py); closed after the services of the
    test, as it is set up first. Imported here, not at the top: webhooks imports this."""
    from .webhooks import Receiver

    hook = Receiver()
    await hook.start()
    yield hook
    await hook.stop()
