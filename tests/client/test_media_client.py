"""`MediaClient` against a live service: uploads, imports, stat, downloads that resume."""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from streamproxy.client import FileStat, MediaClient, MediaError, UploadResult, message_type
from streamproxy.intake.mediatypes import parse_type_rule

from ..conftest import md5, random_bytes
from ..fetch.conftest import ALLOW_SOURCES
from ..fetch.sources import Source, response_head
from .conftest import Recorded

PNG = b"\x89PNG\r\n\x1a\n" + random_bytes(3000, seed=3)


class Cut(Exception):
    """The test's own interruption of a transfer."""


async def test_upload_streams_a_path_and_returns_a_typed_result(
    served: Recorded, client: MediaClient, tmp_path: Path
) -> None:
    data = random_bytes(3 * 1024 * 1024 + 5, seed=1)
    path = tmp_path / "clip.bin"
    path.write_bytes(data)
    calls: list[tuple[int, int | None]] = []

    result = await client.upload(
        path, conversation_id=13318, progress=lambda done, total: calls.append((done, total))
    )

    assert result == UploadResult(
        name="13318_clip.bin",
        type="application/octet-stream",
        size=len(data),
        etag=md5(data),
        url=f"{served.url}/files/download?filename=13318_clip.bin",
        message="File uploaded successfully.",
        original_name="clip.bin",
        conversation_id="13318",
    )
    assert await served.service.fetch(result.name) == data
    # Read and sent chunk by chunk, never whole; the form's length was declared.
    steps = [done for done, _ in calls]
    assert steps[0] == 0 and steps[-1] == len(data)
    assert len(steps) > 10
    assert max(b - a for a, b in itertools.pairwise(steps)) <= client.chunk_size
    assert {total for _, total in calls} == {len(data)}
    (upload,) = served.seen.to("/files", "POST")
    assert "Content-Length" in upload.headers and "Transfer-Encoding" not in upload.headers


async def test_upload_bytes_with_a_name_and_type(served: Recorded, client: MediaClient) -> None:
    result = await client.upload(
        PNG, conversation_id="c1", file_name="développeur.png", mime_type="image/png"
    )
    assert (result.name, result.type, result.size) == ("c1_développeur.png", "image/png", len(PNG))
    assert await served.service.fetch(result.name) == PNG


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_upload_an_async_iterator_of_chunks(served: Recorded, client: MediaClient) -> None:
    parts = [random_bytes(100_000, seed=n) for n in range(5)]
    unsized = await client.upload(chunks(*parts), conversation_id="s", file_name="a.bin")
    sized = await client.upload(
        chunks(*parts), conversation_id="s", file_name="b.bin", size=500_000
    )
    assert unsized.etag == sized.etag == md5(b"".join(parts))
    first, second = served.seen.to("/files", "POST")
    assert first.headers.get("Transfer-Encoding") == "chunked"
    assert "Content-Length" in second.headers


async def test_an_iterator_that_breaks_its_declared_size_fails(
    served: Recorded, client: MediaClient
) -> None:
    with pytest.raises(MediaError) as raised:
        await client.upload(chunks(b"x" * 10), conversation_id="s", file_name="a", size=20)
    assert raised.value.code == "source_changed"
    served.service.assert_nothing_stored()


async def test_a_progress_callback_that_raises_stops_the_upload(
    served: Recorded, client: MediaClient
) -> None:
    def stop(done: int, total: int | None) -> None:
        if done > 300_000:
            raise Cut

    with pytest.raises(Cut):
        await client.upload(random_bytes(2_000_000), conversation_id="c", progress=stop)
    for _ in range(100):  # the service sees the connection end and aborts the upload
        if not served.service.temporaries():
            break
        await asyncio.sleep(0.05)
    served.service.assert_nothing_stored()


async def test_a_refused_upload_raises_with_status_code_and_detail(
    start_recorded: Any, tmp_path: Path
) -> None:
    served: Recorded = await start_recorded(
        max_size=100_000, deny_type=(parse_type_rule("image/*"),)
    )
    big = tmp_path / "big.bin"
    big.write_bytes(random_bytes(300_000))
    async with MediaClient(served.url) as client:
        with pytest.raises(MediaError) as too_large:
            await client.upload(big, conversation_id="1")
        with pytest.raises(MediaError) as refused_type:
            # Declared as octet-stream: the service sniffs the PNG and refuses it mid-stream.
            await client.upload(PNG, conversation_id="1", file_name="x.bin")
    assert too_large.value.status == 413
    assert too_large.value.code == "too_large"
    assert too_large.value.detail == "the file is larger than the limit of 100000 bytes"
    assert too_large.value.message == "An error occurred while uploading file."
    assert refused_type.value.status == 415
    assert refused_type.value.code == "type_not_allowed"
    assert "image/png" in refused_type.value.detail
    assert refused_type.value.request_id
    assert str(refused_type.value).startswith("415 type_not_allowed: ")
    served.service.assert_nothing_stored()


async def test_api_key_is_sent_as_bearer(start_recorded: Any, tmp_path: Path) -> None:
    served: Recorded = await start_recorded(api_key=("secret",))
    async with MediaClient(served.url) as anonymous:
        with pytest.raises(MediaError) as missing:
            await anonymous.upload(b"x", conversation_id="1", file_name="a.txt")
    async with MediaClient(served.url, api_key="wrong") as wrong:
        with pytest.raises(MediaError) as refused:
            await wrong.stat("1_a.txt")
    async with MediaClient(served.url, api_key="secret") as keyed:
        result = await keyed.upload(b"x", conversation_id="1", file_name="a.txt")
        assert (await keyed.stat(result)).etag == result.etag
    assert (missing.value.status, missing.value.code) == (401, "unauthorized")
    assert (refused.value.status, refused.value.code) == (403, "forbidden")
    # Downloads stay open: the client does not send the key where it is not needed.
    async with MediaClient(served.url) as anonymous:
        downloaded = await anonymous.download(result, tmp_path / "a.txt")
    assert downloaded.verified
    (download,) = served.seen.to("/files/download")
    assert "Authorization" not in download.headers


async def test_upload_from_url_and_stat(
    start_recorded: Any, start_source: Any, tmp_path: Path
) -> None:
    served: Recorded = await start_recorded(fetch_allow=ALLOW_SOURCES)
    source: Source = await start_source()
    url = source.file("/m/photo.png", PNG, headers={"Content-Type": "image/png"})
    async with MediaClient(served.url) as client:
        result = await client.upload_from_url(
            url, channel="whatsapp", conversation_id=13318, api_key_360="k360"
        )
        named = await client.upload_from_url(
            url, channel="web", file_name="shot.png", mime_type="image/png"
        )
        stat = await client.stat(result.name)
        with pytest.raises(MediaError) as refused:
            await client.upload_from_url("http://127.0.0.1:1/x", channel="web")
    assert (result.name, result.type, result.etag) == ("13318_photo.png", "image/png", md5(PNG))
    assert named.name == "shot.png"
    assert (result.original_name, named.original_name) == (stat.original_name, "shot.png")
    assert stat.original_name == "photo.png"
    assert source.seen[0].headers["d360-api-key"] == "k360"
    assert isinstance(stat, FileStat)
    assert (stat.channel, stat.conversation_id, stat.size) == ("whatsapp", "13318", len(PNG))
    assert stat.created is not None and stat.created.tzinfo is not None
    assert (refused.value.status, refused.value.code) == (400, "source_not_allowed")


async def test_download_writes_and_verifies_the_file(
    served: Recorded, client: MediaClient, tmp_path: Path
) -> None:
    data = random_bytes(1_500_000, seed=4)
    result = await client.upload(data, conversation_id="d", file_name="v.webm")
    target = tmp_path / "v.webm"
    calls: list[int] = []
    downloaded = await client.download(
        result.name, target, progress=lambda done, total: calls.append(done)
    )
    assert target.read_bytes() == data
    assert (downloaded.size, downloaded.received, downloaded.status) == (len(data), len(data), 200)
    assert downloaded.verified and downloaded.etag == md5(data)
    assert calls[0] == 0 and calls[-1] == len(data)


async def test_an_interrupted_download_resumes_with_range_and_if_range(
    served: Recorded, client: MediaClient, tmp_path: Path
) -> None:
    data = random_bytes(2 * 1024 * 1024 + 3, seed=5)
    result = await client.upload(data, conversation_id="r", file_name="clip.webm")
    target = tmp_path / "clip.webm"

    def cut_halfway(done: int, total: int | None) -> None:
        if total and done >= total // 2:
            raise Cut

    with pytest.raises(Cut):
        await client.download(result, target, progress=cut_halfway)
    kept = target.stat().st_size
    assert 0 < kept < len(data)
    assert target.read_bytes() == data[:kept]

    served.seen.clear()
    resumed = await client.download(result, target)
    assert target.read_bytes() == data
    assert (resumed.status, resumed.resumed_from, resumed.received) == (
        206,
        kept,
        len(data) - kept,
    )
    assert resumed.verified
    (request,) = served.seen.to("/files/download")
    assert request.headers["Range"] == f"bytes={kept}-"
    assert request.headers["If-Range"] == f'"{md5(data)}"'
    assert request.status == 206


async def test_a_connection_cut_by_the_server_keeps_the_bytes_and_resumes(
    start_source: Any, tmp_path: Path
) -> None:
    """A scripted server sends half the body and hangs up; the next call asks for the rest."""
    data = random_bytes(400_000, seed=15)
    half = len(data) // 2
    source: Source = await start_source()
    validators = {"ETag": f'"{md5(data)}"', "Content-Type": "video/webm"}
    source.script("/files/download", response_head(200, len(data), validators) + data[:half])
    stored = FileStat(name="r_cut.webm", type="video/webm", size=len(data), etag=md5(data))
    target = tmp_path / "cut.webm"
    async with MediaClient(source.origin) as client:
        with pytest.raises(MediaError) as raised:
            await client.download(stored, target)
        # What arrived is on disk (aiohttp drops what it had buffered when the cut came).
        kept = target.stat().st_size
        assert 0 < kept <= half
        assert target.read_bytes() == data[:kept]
        assert raised.value.code == "interrupted"
        assert f"{kept} bytes are in {target}: download again to resume" in raised.value.detail

        rest = {**validators, "Content-Range": f"bytes {kept}-{len(data) - 1}/{len(data)}"}
        source.script("/files/download", response_head(206, len(data) - kept, rest) + data[kept:])
        resumed = await client.download(stored, target)
    assert target.read_bytes() == data
    assert (resumed.resumed_from, resumed.verified) == (kept, True)
    assert source.seen[-1].target == "/files/download?filename=r_cut.webm"
    assert source.seen[-1].headers["range"] == f"bytes={kept}-"
    assert source.seen[-1].headers["if-range"] == f'"{md5(data)}"'


async def test_a_half_file_at_the_target_is_resumed_by_name(
    served: Recorded, client: MediaClient, tmp_path: Path
) -> None:
    data = random_bytes(1_000_001, seed=6)
    result = await client.upload(data, conversation_id="r", file_name="a.bin")
    target = tmp_path / "a.bin"
    target.write_bytes(data[:500_000])
    served.seen.clear()
    resumed = await client.download(result.name, target)  # only a name: HEAD tells the ETag
    assert target.read_bytes() == data
    assert (resumed.resumed_from, resumed.verified) == (500_000, True)
    head, get = served.seen.to("/files/download")
    assert (head.method, get.method, get.status) == ("HEAD", "GET", 206)
    assert get.headers["Range"] == "bytes=500000-"
    assert get.headers["If-Range"] == f'"{md5(data)}"'
    # Run again: the file is complete, it is checked and nothing is fetched.
    served.seen.clear()
    again = await client.download(result, target)
    assert (again.status, again.received, again.verified) == (None, 0, True)
    assert served.seen.to("/files/download") == []


async def test_a_stale_etag_gets_the_whole_file_again(
    served: Recorded, client: MediaClient, tmp_path: Path
) -> None:
    data = random_bytes(300_000, seed=7)
    result = await client.upload(data, conversation_id="r", file_name="a.bin")
    target = tmp_path / "a.bin"
    target.write_bytes(random_bytes(1000, seed=99))  # the start of some older file
    stale = dataclasses.replace(result, etag="0" * 32)
    downloaded = await client.download(stale, target)
    assert target.read_bytes() == data
    assert (downloaded.status, downloaded.resumed_from, downloaded.verified) == (200, 0, True)
    (request,) = served.seen.to("/files/download", "GET")
    assert request.headers["If-Range"] == '"' + "0" * 32 + '"' and request.status == 200


async def test_resuming_onto_foreign_bytes_is_caught_by_the_md5(
    served: Recorded, client: MediaClient, tmp_path: Path
) -> None:
    data = random_bytes(200_000, seed=8)
    result = await client.upload(data, conversation_id="r", file_name="a.bin")
    target = tmp_path / "a.bin"
    target.write_bytes(random_bytes(100_000, seed=9))
    with pytest.raises(MediaError) as raised:
        await client.download(result, target)
    assert raised.value.code == "checksum_mismatch"
    assert "download again without resuming" in raised.value.detail
    fresh = await client.download(result, target, resume=False)
    assert fresh.verified and target.read_bytes() == data


@pytest.mark.parametrize(
    ("spec", "expected"),
    [((10, 19), slice(10, 20)), ("100-", slice(100, None)), ("-5", slice(-5, None))],
)
async def test_download_a_range(
    client: MediaClient, tmp_path: Path, spec: Any, expected: slice
) -> None:
    data = random_bytes(1000, seed=10)
    result = await client.upload(data, conversation_id="g", file_name="a.bin")
    target = tmp_path / "part"
    part = await client.download(result, target, byte_range=spec)
    assert target.read_bytes() == data[expected]
    assert part.status == 206 and part.content_range is not None
    assert not part.verified


async def test_a_missing_file_raises_not_found_and_writes_nothing(
    client: MediaClient, tmp_path: Path
) -> None:
    with pytest.raises(MediaError) as raised:
        await client.download("nobody_here.bin", tmp_path / "x")
    assert (raised.value.status, raised.value.code) == (404, "not_found")
    assert not (tmp_path / "x").exists()


async def test_signed_links_keep_their_query_string(
    served: Recorded, client: MediaClient, tmp_path: Path
) -> None:
    uploaded = await client.upload(b"signed bytes", conversation_id="s", file_name="a.txt")
    # What a service with a signing key answers: the same route, more query.
    query = "filename=s_a.txt&expires=1893456000&signature=q%2Bv_Zx-9"
    signed = dataclasses.replace(uploaded, url=f"https://public.example/files/download?{query}")
    assert client.download_url(signed) == signed.url
    assert client.media_message(signed)["attachment"]["mediaUrl"] == signed.url
    await client.download(signed, tmp_path / "a.txt")
    (request,) = served.seen.to("/files/download")
    assert request.path_qs == f"/files/download?{query}"
    assert (tmp_path / "a.txt").read_bytes() == b"signed bytes"


async def test_a_base_path_is_part_of_the_server_url(start_recorded: Any, tmp_path: Path) -> None:
    served: Recorded = await start_recorded(base_path="/media")
    async with MediaClient(served.url + "/media/") as client:
        result = await client.upload(b"abc", conversation_id="b", file_name="a.txt")
        await client.download(result.name, tmp_path / "a.txt")
        assert (
            client.download_url("b_a.txt") == f"{served.url}/media/files/download?filename=b_a.txt"
        )
    assert result.url == f"{served.url}/media/files/download?filename=b_a.txt"
    assert (tmp_path / "a.txt").read_bytes() == b"abc"


@pytest.mark.parametrize(
    ("mime_type", "kind"),
    [
        ("image/png", "IMAGE"),
        ("video/webm", "VIDEO"),
        ("audio/ogg; codecs=opus", "AUDIO"),
        ("application/pdf", "FILE"),
        ("text/plain", "FILE"),
    ],
)
def test_message_type_follows_the_mime_family(mime_type: str, kind: str) -> None:
    assert message_type(mime_type) == kind


async def test_media_message_fills_every_attachment_field(client: MediaClient) -> None:
    result = await client.upload(PNG, conversation_id="13318", file_name="developer.png")
    message = client.media_message(result, caption="Screenshot")
    assert message == {
        "type": "IMAGE",
        "caption": "Screenshot",
        "markdownText": None,
        "additionalDetails": {"fileName": "developer.png"},
        "attachment": {
            "mediaUrl": result.url,
            "mimeType": "image/png",
            "size": len(PNG),
            "thumbnail": None,
            "mediaLabel": "developer.png",
            "mediaName": "13318_developer.png",
        },
    }
    # From the stat of a stored file: the same body, the URL built from the name.
    assert client.media_message(await client.stat(result.name), caption="Screenshot") == message


async def test_no_service_is_a_connection_failure() -> None:
    async with MediaClient("http://127.0.0.1:1") as client:
        with pytest.raises(MediaError) as raised:
            await client.stat("x")
    assert raised.value.status is None
    assert raised.value.code == "connection_failed"


def test_the_server_url_must_be_http() -> None:
    with pytest.raises(ValueError, match="not an http"):
        MediaClient("127.0.0.1:8080")
