"""tus `concatenation-unfinished`: a final upload created while its parts still upload.

On each storage (local, and S3 through moto's server and RGW), with aiohttp on a real
server: the final upload waits (HEAD without an offset), the parts take their PATCHes,
and the PATCH that finishes the last part assembles and commits it, also on another
instance sharing the storage; a part that is unknown or terminated gets a clear refusal
and leaves nothing behind.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from streamproxy.intake.scan import ClamdAddress

from ..conftest import LocalStore, Service, ServiceFactory, md5, random_bytes
from ..test_scan import Clamd
from ..test_scan import clamd as clamd  # the fixture: a real clamd
from .test_tus_routes import TUS, head, metadata, patch
from .uploads import upload_objects, uploads_left

pytestmark = pytest.mark.every_s3_server  # links beside the parts and the assembly read the bucket

META = metadata(filename="joined.bin", conversationId="c9")


async def partial(service: Service, length: int | None) -> str:
    """A partial upload's URL; `length` None: deferred."""
    headers = {**TUS, "Upload-Concat": "partial"}
    headers.update({"Upload-Length": str(length)} if length is not None else {})
    headers.update({"Upload-Defer-Length": "1"} if length is None else {})
    async with service.session.post(service.url + "/files/uploads", headers=headers) as answer:
        assert answer.status == 201, await answer.text()
        return answer.headers["Location"]


async def final(service: Service, *urls: str) -> tuple[int, Any, Any]:
    headers = {**TUS, "Upload-Concat": "final;" + " ".join(urls), "Upload-Metadata": META}
    async with service.session.post(service.url + "/files/uploads", headers=headers) as answer:
        return answer.status, answer.headers, await answer.json(content_type=None)


async def get(service: Service, url: str) -> tuple[int, Any]:
    async with service.session.get(url, headers=TUS) as answer:
        return answer.status, await answer.json(content_type=None)


def upload_id(url: str) -> str:
    return url.rsplit("/", 1)[1]


def links_of(service: Service, part_url: str) -> list[str]:
    """What the part holds besides its own record and bytes: links to final uploads."""
    part = upload_id(part_url)
    store = service.store
    if isinstance(store, LocalStore):
        directory = store.root / ".uploads" / part
        return sorted(p.name for p in directory.iterdir() if p.name.startswith("final."))
    leaves = (key.removeprefix(part + "/") for key in upload_objects(service))
    return sorted(leaf for leaf in leaves if leaf.startswith("final."))


@pytest.mark.parametrize("last", [0, 1])
async def test_a_final_created_before_its_parts_finish_is_assembled_by_the_last_patch(
    service: Service, last: int
) -> None:
    data = random_bytes(900_000, seed=12)
    pieces = (data[:400_000], data[400_000:])
    urls = [await partial(service, len(pieces[0])), await partial(service, None)]
    for url, piece in zip(urls, pieces, strict=True):  # half of each, before the final
        assert (await patch(service, url, 0, piece[:100_000]))[0] == 204

    status, headers, _ = await final(service, *urls)
    assert status == 201 and "Upload-Offset" not in headers and "Upload-Expires" in headers
    final_url = headers["Location"]
    assert [link.removeprefix("final.") for link in links_of(service, urls[0])] == [
        upload_id(final_url)
    ]
    # Waiting: no offset (undefined before concatenation), no length while a part's
    # is deferred, the Upload-Concat it was created with.
    status, headers = await head(service, final_url)
    assert status == 200 and "Upload-Offset" not in headers and "Upload-Length" not in headers
    assert headers["Upload-Concat"] == "final;" + " ".join(urls)
    # The deferred part declares its length: the final's length can be told (tus: MUST).
    rest = pieces[1][100_000:200_000]
    extra = {"Upload-Length": str(len(pieces[1]))}
    assert (await patch(service, urls[1], 100_000, rest, **extra))[0] == 204
    status, headers = await head(service, final_url)
    assert "Upload-Offset" not in headers and headers["Upload-Length"] == str(len(data))

    offsets = [100_000, 200_000]
    first = 1 - last
    status, answer, _ = await patch(
        service, urls[first], offsets[first], pieces[first][offsets[first] :]
    )
    assert status == 204 and answer["Upload-Offset"] == str(len(pieces[first]))
    assert service.stored_names() == set()
    status, headers = await head(service, final_url)
    assert status == 200 and "Upload-Offset" not in headers
    assert (await get(service, final_url))[0] == 404  # not complete yet

    # The last part's PATCH answers for the part, and has assembled the final by then.
    status, answer, _ = await patch(
        service, urls[last], offsets[last], pieces[last][offsets[last] :]
    )
    assert status == 204 and answer["Upload-Offset"] == str(len(pieces[last]))
    assert service.stored_names() == {"c9_joined.bin"}
    assert await service.fetch("c9_joined.bin") == data
    status, body = await get(service, final_url)
    assert status == 200 and body["name"] == "c9_joined.bin"
    assert body["etag"] == md5(data) and body["size"] == len(data)
    status, headers = await head(service, final_url)
    assert headers["Upload-Offset"] == headers["Upload-Length"] == str(len(data))
    # A PATCH on the final upload is still 403.
    assert (await patch(service, final_url, len(data), b"x"))[0] == 403


async def test_a_final_naming_an_unknown_or_terminated_part_is_refused_and_leaves_nothing(
    service: Service,
) -> None:
    waiting = await partial(service, 1000)
    assert (await patch(service, waiting, 0, random_bytes(10)))[0] == 204
    terminated = await partial(service, 1000)
    async with service.session.delete(terminated, headers=TUS) as answer:
        assert answer.status == 204
    unknown = service.url + "/files/uploads/" + "B" * 22
    for gone in (terminated, unknown):
        status, _, body = await final(service, waiting, gone)
        assert status == 404 and body["error"] == "not_found", body
        assert upload_id(gone) in body["detail"]
    assert uploads_left(service) == [upload_id(waiting)]  # no final upload, no link
    assert links_of(service, waiting) == []
    service.assert_nothing_stored()


async def test_a_part_terminated_while_its_final_waits_fails_the_final(service: Service) -> None:
    urls = [await partial(service, 300_000), await partial(service, 300_000)]
    status, headers, _ = await final(service, *urls)
    assert status == 201
    final_url = headers["Location"]
    status, headers = await head(service, final_url)  # the parts' lengths are known
    assert "Upload-Offset" not in headers and headers["Upload-Length"] == "600000"
    async with service.session.delete(urls[1], headers=TUS) as answer:
        assert answer.status == 204  # not refused: the final upload fails instead
    # The other part still takes PATCHes; finishing it fails the final, which says why.
    assert (await patch(service, urls[0], 0, random_bytes(300_000)))[0] == 204
    assert (await head(service, final_url))[0] == 410
    status, body = await get(service, final_url)
    assert status == 410 and body["error"] == "expired" and upload_id(urls[1]) in body["detail"]
    assert (await final(service, urls[0]))[0] == 201  # the finished part is still usable
    assert service.stored_names() == {"c9_joined.bin"}


async def test_the_last_parts_finishing_on_two_instances_assemble_the_final_once(
    start_service: ServiceFactory,
) -> None:
    """No sticky sessions: the parts and the final are created on one instance, the
    parts finished at once on both (one each); whichever sees both finished assembles."""
    first = await start_service()
    second = await start_service(storage=first.settings.storage)
    data = random_bytes(600_000, seed=13)
    pieces = (data[:250_000], data[250_000:])
    urls = [await partial(first, len(piece)) for piece in pieces]
    status, headers, _ = await final(first, *urls)
    assert status == 201
    final_url = headers["Location"]
    answers = await asyncio.gather(
        patch(first, urls[0], 0, pieces[0]), patch(second, urls[1], 0, pieces[1])
    )
    assert [answer[0] for answer in answers] == [204, 204]
    assert first.stored_names() == {"c9_joined.bin"}  # assembled once, before any look
    assert await second.fetch("c9_joined.bin") == data
    for service in (first, second):
        status, body = await get(service, final_url.replace(first.url, service.url))
        assert status == 200 and body["etag"] == md5(data)


async def test_the_last_part_finished_on_a_second_instance_assembles_the_final(
    start_service: ServiceFactory,
) -> None:
    first = await start_service()
    second = await start_service(storage=first.settings.storage)
    data = random_bytes(500_000, seed=14)
    urls = [await partial(first, 200_000), await partial(first, 300_000)]
    assert (await patch(first, urls[0], 0, data[:200_000]))[0] == 204
    status, headers, _ = await final(first, *urls)
    assert status == 201 and "Upload-Offset" not in headers
    url = urls[1].replace(first.url, second.url)
    assert (await patch(second, url, 0, data[200_000:]))[0] == 204
    assert second.stored_names() == {"c9_joined.bin"}
    assert await first.fetch("c9_joined.bin") == data
    status, headers = await head(first, headers["Location"])
    assert headers["Upload-Offset"] == headers["Upload-Length"] == str(len(data))


async def test_an_assembly_whose_commit_failed_is_retried_by_a_look_at_the_final(
    start_service: ServiceFactory, clamd: Clamd, tmp_path: Path
) -> None:
    """The instance that finishes the last part cannot reach its scanner (fail closed):
    the part's PATCH still answers 204 and nothing is stored; a GET on the final upload
    at another instance, whose scanner answers, commits it."""
    away = ClamdAddress(path=str(tmp_path / "no-clamd.sock"))
    blind = await start_service(clamd=away)
    seeing = await start_service(
        storage=blind.settings.storage, clamd=ClamdAddress(path=str(clamd.socket))
    )
    data = random_bytes(400_000, seed=15)
    part = await partial(blind, len(data))
    status, headers, _ = await final(blind, part)
    assert status == 201
    final_url = headers["Location"]
    assert (await patch(blind, part, 0, data))[0] == 204
    assert blind.stored_names() == set()
    status, body = await get(blind, final_url)
    assert status == 503 and body["error"] == "scanner_unavailable"
    status, body = await get(seeing, final_url.replace(blind.url, seeing.url))
    assert status == 200 and body["etag"] == md5(data)
    assert await blind.fetch("c9_joined.bin") == data
