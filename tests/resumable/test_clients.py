"""Real resumable clients against a real server: tus-js-client under Node (plain tus and
`ietf-draft-05`, i.e. the draft at interop 6) and tuspy (sha1 checksums, resumed by a
second client), also through a proxy that cuts the connection at random offsets.

tus-js-client is installed by npm into tests/resumable/node/node_modules the first time
(package.json pins it); without node or npm the tests skip, and under CI=true fail.
"""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import random
import subprocess
from pathlib import Path
from typing import Any

import pytest
from tusclient.client import TusClient

from ..conftest import Service, ServiceFactory, md5, random_bytes, require_program
from ..cutproxy import CuttingProxy

pytestmark = pytest.mark.every_s3_server  # real clients against records and parts in the bucket

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="session")
def node_client() -> Path:
    """The upload script, with tus-js-client installed next to it (once).

    The suite's workers (pytest-xdist) may all ask at once: one installs under a lock,
    and the others wait for its stamp, written only after npm has finished (a
    half-made node_modules/tus-js-client is not an installation)."""
    node = require_program("node", "nodejs")
    npm = require_program("npm", "npm")
    stamp = NODE_DIR / "node_modules" / ".installed-by-tests"
    with open(NODE_DIR / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        wanted = (NODE_DIR / "package.json").read_text()
        if not stamp.exists() or stamp.read_text() != wanted:  # a new pin installs again
            subprocess.run(
                [npm, "install", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=300
            )
            stamp.write_text(wanted)
    assert node
    return NODE_DIR / "upload.mjs"


async def node_upload(
    script: Path, endpoint: str, file: Path, protocol: str, chunk: int, parallel: int = 1
) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        "node",
        str(script),
        endpoint,
        str(file),
        protocol,
        str(chunk),
        "c42",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PARALLEL": str(parallel)},
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    code = process.returncode
    assert code == 0, (out, err)
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


@pytest.mark.parametrize("protocol", ["tus-v1", "ietf-draft-05"])
async def test_tus_js_client_uploads(
    service: Service, node_client: Path, tmp_path: Path, protocol: str
) -> None:
    data = random_bytes(2_500_000, seed=11)
    file = tmp_path / "movie.mp4"
    file.write_bytes(data)
    result = await node_upload(node_client, service.url + "/files/uploads", file, protocol, 1 << 20)
    assert result["status"] == (204 if protocol == "tus-v1" else 200), result
    assert result["offsets"][-1] == len(data)
    assert await service.fetch("c42_movie.mp4") == data
    headers = (
        {"Tus-Resumable": "1.0.0"}
        if protocol == "tus-v1"
        else {"Upload-Draft-Interop-Version": "6"}
    )
    async with service.session.get(result["url"], headers=headers) as answer:
        body = await answer.json()
    assert (body["name"], body["etag"], body["size"]) == ("c42_movie.mp4", md5(data), len(data))


@pytest.mark.parametrize("protocol", ["tus-v1", "ietf-draft-05"])
async def test_tus_js_client_resumes_after_connections_cut_at_random_offsets(
    start_service: ServiceFactory, node_client: Path, tmp_path: Path, protocol: str
) -> None:
    service = await start_service(max_size=20_000_000)
    data = random_bytes(4_000_000, seed=12)
    file = tmp_path / "long.bin"
    file.write_bytes(data)
    cuts = random.Random(len(protocol))
    budgets = [cuts.randrange(20_000, 700_000) for _ in range(6)]
    # The server takes in every byte before a cut: tus-js-client gives up after 4 retries
    # in a row without progress, so each cut must leave some on the server.
    proxy = CuttingProxy(service.port, budgets, from_patch=False, taken=service.taken)
    endpoint = await proxy.start()
    try:
        result = await node_upload(
            node_client, endpoint + "/files/uploads", file, protocol, 2_000_000
        )
    finally:
        await proxy.close()
    assert proxy.cuts == []  # every planned budget went to a connection
    assert await service.fetch("c42_long.bin") == data
    stat = await service.session.get(service.url + "/files/stat?filename=c42_long.bin")
    assert (await stat.json())["etag"] == md5(data)
    assert result["offsets"][-1] == len(data)


async def test_tuspy_with_sha1_checksums_resumed_by_another_client(
    service: Service, tmp_path: Path
) -> None:
    data = random_bytes(1_300_000, seed=13)
    file = tmp_path / "notes.txt"
    file.write_bytes(data)
    client = TusClient(service.url + "/files/uploads")
    meta = {"filename": "notes.txt", "conversationId": "c43"}
    first = client.async_uploader(
        str(file), chunk_size=300_000, metadata=meta, upload_checksum=True
    )
    await first.upload(stop_at=600_000)
    url: Any = first.url
    assert first.offset == 600_000 and url
    assert service.stored_names() == set()
    # Given a URL, tuspy asks for the offset with a blocking HEAD: not on this loop.
    second = await asyncio.to_thread(
        client.async_uploader, str(file), chunk_size=500_000, url=url, upload_checksum=True
    )
    assert second.offset == 600_000
    assert second.checksum_algorithm_name == "sha1"
    await second.upload()
    assert await service.fetch("c43_notes.txt") == data
    stat = await service.session.get(service.url + "/files/stat?filename=c43_notes.txt")
    assert (await stat.json())["etag"] == md5(data)


async def test_tus_js_client_parallel_uploads_are_concatenated(
    service: Service, node_client: Path, tmp_path: Path
) -> None:
    data = random_bytes(3_000_001, seed=14)
    file = tmp_path / "split.bin"
    file.write_bytes(data)
    endpoint = service.url + "/files/uploads"
    result = await node_upload(node_client, endpoint, file, "tus-v1", 500_000, parallel=3)
    assert result["status"] == 201, result
    assert await service.fetch("c42_split.bin") == data
    async with service.session.head(result["url"], headers={"Tus-Resumable": "1.0.0"}) as answer:
        concat = answer.headers["Upload-Concat"]
    assert concat.startswith("final;") and len(concat.split()) == 3
    async with service.session.get(result["url"], headers={"Tus-Resumable": "1.0.0"}) as answer:
        assert (await answer.json())["etag"] == md5(data)
    # The parts alone are never stored under a name.
    assert service.stored_names() == {"c42_split.bin"}
