"""Three `streamproxy serve` processes on one bucket behind nginx (tests/cluster.py).

The instances share nothing but the S3 prefix. Every S3 request they make goes
through a logging proxy (tests/s3log.py), so a test can tell what the object
store itself answered: with moto's server, whose conditional write is a check
followed by an unlocked write, two racing creates of one key can both be told
200; that is the store breaking its promise, and the race test below proves it
from the wire before it says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from .cluster import Cluster, nginx_program
from .conftest import field_part, file_part, http_post_head, md5, multipart_body, random_bytes
from .s3log import S3Log
from .s3servers import s3_kinds
from .s3support import BUCKET, S3Store, until

pytestmark = pytest.mark.every_s3_server  # several instances on one bucket

# The S3 servers the cluster runs on (STREAMPROXY_TEST_S3 picks), each by its session
# fixture `<name>_server`. On RGW large files claim their name first (storage.s3nameclaim).
S3_SERVERS = s3_kinds()
# Servers whose `If-None-Match: *` is a check followed by an unlocked write (moto 5:
# s3/responses.py put_object and complete_multipart_upload), so two racing creates of
# one key may both succeed. Any other server is held to an atomic create.
NOT_ATOMIC = {"moto"}

MiB = 1024 * 1024
KEY = "scaleout-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
SERVE_ARGS = ("--max-size", "40M", "--s3-part-size", "5M", "--api-key", KEY)
StartCluster = Callable[..., Awaitable[Cluster]]


@pytest.fixture(params=S3_SERVERS)
def cluster_s3(request: pytest.FixtureRequest) -> tuple[str, Any]:
    """(name, server) of the S3 server under the cluster; a parameter, so more can be added."""
    name: str = request.param
    return name, request.getfixturevalue(f"{name}_server")


@pytest.fixture
async def s3_log(cluster_s3: tuple[str, Any]) -> AsyncIterator[S3Log]:
    port = urlsplit(cluster_s3[1].endpoint).port
    assert port is not None
    log = await S3Log(port).start()
    yield log
    await log.close()


@pytest.fixture
async def start_cluster(
    tmp_path: Path, cluster_s3: tuple[str, Any], s3_log: S3Log
) -> AsyncIterator[StartCluster]:
    """Start a cluster on a fresh prefix (extra `serve` flags as arguments); stopped at the end."""
    if nginx_program() is None:
        pytest.skip("needs nginx (Debian: nginx-light)")
    started: list[Cluster] = []

    async def start(*serve_args: str, size: int = 3) -> Cluster:
        prefix = f"scaleout-{time.time_ns()}/"
        cluster = Cluster(
            tmp_path / f"cluster{len(started)}",
            f"s3://{BUCKET}/{prefix}",
            s3_log.endpoint,
            size=size,
            serve_args=(*SERVE_ARGS, *serve_args),
        )
        started.append(cluster)
        return await cluster.start()

    yield start
    for cluster in started:
        await cluster.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as client:
        yield client


def store_of(cluster: Cluster, cluster_s3: tuple[str, Any]) -> S3Store:
    return S3Store(cluster_s3[1], cluster.storage.removeprefix(f"s3://{BUCKET}/"))


async def upload(
    session: aiohttp.ClientSession, url: str, data: bytes, filename: str, conversation: str
) -> tuple[dict[str, Any], str]:
    """Upload through `url`; the answer and the instance that took it (nginx's X-Upstream)."""
    form = aiohttp.FormData()
    form.add_field("conversationId", conversation)
    form.add_field("file", data, filename=filename, content_type="application/octet-stream")
    async with session.post(url + "/files", data=form) as response:
        assert response.status == 200, await response.text()
        return await response.json(), response.headers.get("X-Upstream", url)


async def fetch(session: aiohttp.ClientSession, url: str, name: str) -> tuple[int, bytes]:
    async with session.get(url + "/files/download", params={"filename": name}) as response:
        return response.status, await response.read()


async def listing(session: aiohttp.ClientSession, url: str, conversation: str, **params: str):
    query = {"conversationId": conversation, **params}
    async with session.get(url + "/files", params=query) as response:
        assert response.status == 200, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


async def test_racing_uploads_of_one_name_across_instances_give_distinct_intact_files(
    start_cluster: StartCluster,
    cluster_s3: tuple[str, Any],
    s3_log: S3Log,
    session: aiohttp.ClientSession,
) -> None:
    cluster = await start_cluster()
    store = store_of(cluster, cluster_s3)
    # Small files (one conditional PutObject each) and two of several parts (a
    # conditional CompleteMultipartUpload), all named race.bin in one conversation.
    payloads = [random_bytes(1000 + 7919 * index, seed=index) for index in range(48)]
    payloads += [random_bytes(6 * MiB + index, seed=1000 + index) for index in range(2)]
    answers = await asyncio.gather(
        *(upload(session, cluster.nginx_url, data, "race.bin", "race") for data in payloads)
    )
    # nginx spread them over every instance (round robin).
    assert {upstream for _, upstream in answers} == {i.address for i in cluster.instances}
    claimants: dict[str, list[bytes]] = defaultdict(list)
    for (answer, _), data in zip(answers, payloads, strict=True):
        assert answer["etag"] == md5(data) and answer["size"] == len(data)
        claimants[answer["name"]].append(data)
    # What each name holds, through nginx (any instance) and in the bucket itself.
    replaced: list[str] = []
    for name, datas in claimants.items():
        status, stored = await fetch(session, cluster.nginx_url, name)
        assert status == 200
        assert stored in datas, f"{name} holds bytes no upload sent"  # never torn or mixed
        head = cluster_s3[1].client.head_object(Bucket=BUCKET, Key=store.prefix + name)
        assert head["Metadata"]["md5"] == md5(stored)  # its metadata is its own
        if len(datas) > 1:
            # The service answered 200 for more uploads than the name now holds. Only
            # a server that accepted as many conditional creates of the key may do that.
            accepted = s3_log.accepted_creates(store.prefix + name)
            assert cluster_s3[0] in NOT_ATOMIC and accepted >= len(datas), (
                f"{len(datas)} uploads were told {name}, but the server accepted "
                f"{accepted} conditional creates of it: the service lost a file"
            )
            replaced.append(f"{name}: {len(datas)} uploads told 200, {accepted} creates accepted")
    assert store.stored_names() == set(claimants)
    assert store.meta_names() == set(claimants)
    assert store.temporaries() == []
    if replaced:
        # The service's part held (each writer sent If-None-Match: * and was told
        # 200 by the server), but the server replaced a file: not a pass.
        pytest.xfail(
            f"{cluster_s3[0]} let racing conditional creates of one key both succeed "
            f"(its known check-then-write defect), so {len(payloads) - len(claimants)} "
            f"of {len(payloads)} files were replaced by the store: " + "; ".join(replaced)
        )
    assert len(claimants) == len(payloads)


async def test_instance_killed_mid_upload_leaves_nothing_and_another_cleans_its_upload(
    start_cluster: StartCluster, cluster_s3: tuple[str, Any], session: aiohttp.ClientSession
) -> None:
    cluster = await start_cluster("--stale-after", "4s")
    store = store_of(cluster, cluster_s3)
    victim, survivors = cluster.instances[0], cluster.instances[1:]
    data = random_bytes(30 * MiB, seed=15)
    body = multipart_body("kill", [field_part("conversationId", "77"), file_part(data, "k.bin")])
    head = http_post_head("/files", "kill", len(body), extra=f"Authorization: Bearer {KEY}\r\n")
    reader, writer = await asyncio.open_connection("127.0.0.1", victim.port)
    try:
        writer.write(head + body[: 14 * MiB])
        await writer.drain()
        # Parts are in the staging multipart upload: the transfer is well under way.
        await until(lambda: bool(store.multipart_uploads()))
        left = store.multipart_uploads()  # the victim's: only it uploads to this prefix
        victim.kill()
        await victim.process.wait()
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError):
            assert await asyncio.wait_for(reader.read(), 10) == b""  # no answer, ever
    finally:
        writer.close()
    # Nothing visible, through any instance or in the bucket.
    assert store.stored_names() == set()
    for instance in survivors:
        assert (await listing(session, instance.url, "77"))["files"] == []
        assert (await fetch(session, instance.url, "77_k.bin"))[0] == 404
    # The survivors' stale sweep (every second with --stale-after 4s) aborts it.
    await until(lambda: store.temporaries() == [], within=60)
    for key in left:  # the log line follows the removal: wait for it too

        def logged(key: str = key) -> bool:
            marker = f"removed stale Leftover(key='{key}'"
            return any(marker in line for i in survivors for line in i.log)

        await until(logged, within=10)
    assert store.stored_names() == set()


async def test_a_file_uploaded_through_one_instance_downloads_through_every_other(
    start_cluster: StartCluster, session: aiohttp.ClientSession
) -> None:
    cluster = await start_cluster()
    first, *others = cluster.instances
    files = [random_bytes(3000, seed=1), random_bytes(12 * MiB + 5, seed=2)]
    for data in files:
        answer, _ = await upload(session, first.url, data, "x.bin", "88")
        for instance in others:
            assert await fetch(session, instance.url, answer["name"]) == (200, data)
        # Through nginx: three requests reach the three instances in turn.
        reached = set()
        for _ in cluster.instances:
            async with session.get(
                cluster.nginx_url + "/files/download", params={"filename": answer["name"]}
            ) as response:
                assert (response.status, await response.read()) == (200, data)
                reached.add(response.headers["X-Upstream"])
        assert reached == {instance.address for instance in cluster.instances}
        async with session.get(
            others[0].url + "/files/download",
            params={"filename": answer["name"]},
            headers={"Range": "bytes=1000-1999"},
        ) as response:
            assert response.status == 206
            assert await response.read() == data[1000:2000]


async def test_listing_and_deletion_through_different_instances(
    start_cluster: StartCluster, cluster_s3: tuple[str, Any], session: aiohttp.ClientSession
) -> None:
    cluster = await start_cluster()
    store = store_of(cluster, cluster_s3)
    one, two, three = cluster.instances
    names: list[str] = []
    for index, instance in enumerate(cluster.instances):
        answer, _ = await upload(session, instance.url, b"file %d" % index, f"f{index}.txt", "99")
        names.append(answer["name"])
    # Each instance lists what the others stored; a cursor from one works on another.
    for instance in cluster.instances:
        assert {f["name"] for f in (await listing(session, instance.url, "99"))["files"]} == set(
            names
        )
    page = await listing(session, one.url, "99", limit="2")
    rest = await listing(session, three.url, "99", limit="2", cursor=page["next"])
    assert {f["name"] for f in page["files"] + rest["files"]} == set(names)
    assert rest["next"] is None
    # A file deleted through one instance is gone through the one that stored (and served) it.
    assert await fetch(session, one.url, names[0]) == (200, b"file 0")
    async with session.delete(three.url + "/files", params={"filename": names[0]}) as response:
        assert response.status == 204
    assert (await fetch(session, one.url, names[0]))[0] == 404
    assert (await fetch(session, cluster.nginx_url, names[0]))[0] == 404
    # Erasing the conversation through another instance removes the rest for all of them.
    async with session.delete(two.url + "/files", params={"conversationId": "99"}) as response:
        assert response.status == 200
        assert await response.json() == {"deleted": 2}
    for instance in cluster.instances:
        assert (await listing(session, instance.url, "99"))["files"] == []
        assert (await fetch(session, instance.url, names[1]))[0] == 404
    assert store.stored_names() == set()
    assert store.temporaries() == []
