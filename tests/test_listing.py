"""Listing: `GET /files?conversationId=ID[&limit=N&cursor=C]`, on both storages.

Pagination over 250 files, `a` against `a_b`, an empty conversation, bad
limits and cursors (tampered, for another conversation, made up), the API key,
and a cursor issued by one instance accepted by another on the same storage.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
from datetime import datetime
from typing import Any

import pytest

from .conftest import Service, ServiceFactory
from .conversations import AUTH, KEY, fill, upload_to

pytestmark = pytest.mark.every_s3_server  # ListObjectsV2 paging and ordering differ between servers


async def listing(
    service: Service, headers: dict[str, str] | None = AUTH, **params: str
) -> tuple[int, Any]:
    async with service.session.get(
        service.url + "/files", params=params, headers=headers
    ) as response:
        return response.status, await response.json()


async def test_pages_over_250_files(start_service: ServiceFactory) -> None:
    service = await start_service(api_key=(KEY,))
    names = await fill(service.session, service.url, "p", 250)
    seen: list[dict[str, Any]] = []
    status, page = await listing(service, conversationId="p")  # the default limit: 100
    assert status == 200 and len(page["files"]) == 100 and page["next"]
    seen += page["files"]
    sizes = []
    while page["next"]:
        status, page = await listing(service, conversationId="p", limit="70", cursor=page["next"])
        assert status == 200, page
        sizes.append(len(page["files"]))
        seen += page["files"]
    assert sizes == [70, 70, 10]
    assert [entry["name"] for entry in seen] != [] and {e["name"] for e in seen} == names
    assert len(seen) == 250  # no file twice
    order = [(entry["created"], entry["name"]) for entry in seen]
    assert order == sorted(order, reverse=True)  # newest first
    first = seen[0]
    assert set(first) == {"name", "type", "size", "etag", "created", "url"}
    datetime.fromisoformat(first["created"])  # ISO 8601
    assert first["url"].startswith(service.url + "/files/download?filename=")
    async with service.session.get(first["url"]) as response:
        assert response.status == 200 and len(await response.read()) == first["size"]


async def test_a_and_a_b_are_different_conversations(start_service: ServiceFactory) -> None:
    service = await start_service(api_key=(KEY,))
    of_a = await upload_to(service.session, service.url, "a", "b_x.txt", b"of a")
    of_a_b = await upload_to(service.session, service.url, "a_b", "y.txt", b"of a_b")
    assert of_a["name"].startswith("a_b_") and of_a_b["name"].startswith("a_b_")
    status, page = await listing(service, conversationId="a")
    assert status == 200 and [e["name"] for e in page["files"]] == [of_a["name"]]
    status, page = await listing(service, conversationId="a_b")
    assert [e["name"] for e in page["files"]] == [of_a_b["name"]]
    async with service.session.delete(
        service.url + "/files", params={"conversationId": "a"}, headers=AUTH
    ) as response:
        assert await response.json() == {"deleted": 1}
    service.assert_clean({of_a_b["name"]})


async def test_an_empty_conversation(service: Service) -> None:
    await service.upload_json(b"elsewhere", conversation_id="other")
    assert await listing(service, headers=None, conversationId="nobody") == (
        200,
        {"files": [], "next": None},
    )


@pytest.mark.parametrize("limit", ["0", "1001", "-1", "ten", "", "1.5"])
async def test_bad_limits(service: Service, limit: str) -> None:
    status, body = await listing(service, conversationId="c", limit=limit)
    assert status == 400 and body["error"] == "bad_request", body
    assert "limit" in body["detail"]


def tamper(cursor: str) -> str:
    """The same cursor with its position moved one second back, its signature kept."""
    payload, _, signature = cursor.partition(".")
    owner, created, name = json.loads(base64.urlsafe_b64decode(payload + "=" * 4))
    moved = json.dumps([owner, created - 1, name]).encode()
    return base64.urlsafe_b64encode(moved).rstrip(b"=").decode() + "." + signature


async def test_bad_cursors(service: Service) -> None:
    for index in range(3):
        await service.upload_json(b"x", filename=f"{index}.txt", conversation_id="c")
    status, page = await listing(service, conversationId="c", limit="1")
    assert status == 200 and page["next"]
    cursor = page["next"]
    for bad, params in [
        ("made up", {"conversationId": "c", "cursor": "bm90IG91cnM.AAAA"}),
        ("not base64", {"conversationId": "c", "cursor": "***"}),
        ("empty", {"conversationId": "c", "cursor": ""}),
        ("tampered", {"conversationId": "c", "cursor": tamper(cursor)}),
        ("signature cut", {"conversationId": "c", "cursor": cursor[:-2]}),
        ("other conversation", {"conversationId": "d", "cursor": cursor}),
    ]:
        status, body = await listing(service, **params)
        assert status == 400 and body["error"] == "bad_request", (bad, body)
        assert "cursor" in body["detail"]
    status, page = await listing(service, conversationId="c", cursor=cursor)
    assert status == 200 and len(page["files"]) == 2 and page["next"] is None


async def test_listing_needs_the_key_when_keys_are_configured(
    start_service: ServiceFactory,
) -> None:
    service = await start_service(api_key=(KEY,))
    status, body = await listing(service, headers=None, conversationId="c")
    assert status == 401 and body["error"] == "unauthorized"
    wrong = {"Authorization": "Bearer no"}
    status, body = await listing(service, headers=wrong, conversationId="c")
    assert status == 403 and body["error"] == "forbidden"


@pytest.mark.parametrize("signing_key", [(), ("sign-one",)], ids=["stored-key", "signing-key"])
async def test_a_cursor_works_on_another_instance(
    start_service: ServiceFactory, tmp_path: Any, signing_key: tuple[str, ...]
) -> None:
    """Instances (and workers) on one storage share the cursor key: the storage keeps
    it (made by a conditional write; here four instances race to make it), or the
    signing key is used."""
    root = tmp_path / "shared"
    instances = [await start_service(root=root, signing_key=signing_key) for _ in range(4)]
    for index in range(3):
        await instances[0].upload_json(b"x", filename=f"{index}.txt", conversation_id="c")
    firsts = await asyncio.gather(
        *(listing(one, conversationId="c", limit="2") for one in instances)
    )
    assert all(status == 200 and page["next"] for status, page in firsts)
    for _, page in firsts:
        for other in instances:
            status, rest = await listing(other, conversationId="c", cursor=page["next"])
            assert status == 200, rest
            assert len(rest["files"]) == 1 and rest["next"] is None
    if signing_key:
        assert "signature=" in rest["files"][0]["url"]


@pytest.mark.local_only  # the document depends on settings, not on the storage
@pytest.mark.parametrize("keys", [(), (KEY,)], ids=["open", "keyed"])
async def test_the_openapi_document_covers_listing_and_deletion(
    start_service: ServiceFactory, keys: tuple[str, ...]
) -> None:
    service = await start_service(api_key=keys)
    async with service.session.get(service.url + "/openapi.json") as response:
        files = (await response.json())["paths"]["/files"]
    listed, deleting = files["get"], files["delete"]
    assert {p["name"] for p in listed["parameters"]} == {"conversationId", "limit", "cursor"}
    assert {p["name"] for p in deleting["parameters"]} == {"filename", "conversationId"}
    assert {"200", "204", "400", "403", "404"} <= set(deleting["responses"])
    assert ("401" in deleting["responses"]) == bool(keys)  # without keys: always 403
    for operation in (listed, deleting):
        assert ("security" in operation) == bool(keys)


@pytest.mark.local_only  # S3 has no sidecar files: a prefix listing and one HEAD per file
async def test_local_listing_and_erasure_open_only_their_conversations_sidecars(
    start_service: ServiceFactory,
) -> None:
    """Another conversation's sidecar is replaced by a FIFO: opening it would block the
    storage thread for ever, so listing and erasure can only pass without opening it."""
    service = await start_service(api_key=(KEY,))
    mine = await fill(service.session, service.url, "small", 3)
    other = await upload_to(service.session, service.url, "other", "x.txt")
    sidecar = service.root / ".meta" / f"{other['name']}.json"
    sidecar.unlink(missing_ok=True)  # none where the metadata is attached to the file
    os.mkfifo(sidecar)
    try:
        status, page = await asyncio.wait_for(listing(service, conversationId="small"), 10)
        assert status == 200 and {entry["name"] for entry in page["files"]} == mine
        async with service.session.delete(
            service.url + "/files", params={"conversationId": "small"}, headers=AUTH
        ) as response:
            assert await asyncio.wait_for(response.json(), 10) == {"deleted": 3}
        assert service.stored_names() == {other["name"]}
    finally:  # should a reader be blocked on the FIFO, let it go so the server can stop
        with contextlib.suppress(OSError):
            os.close(os.open(sidecar, os.O_WRONLY | os.O_NONBLOCK))
