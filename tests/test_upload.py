"""The stream upload's contract, field by field (API.md "Upload a file stream")."""

from __future__ import annotations

import asyncio
import json
import re
import warnings
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp.multipart import parse_content_disposition

from streamproxy.error_table import ApiError
from streamproxy.intake.mediatypes import TypePolicy
from streamproxy.intake.multipart import parse_disposition
from streamproxy.intake.multipart_parser import (
    FormEnd,
    FormLimits,
    FormParser,
    MalformedForm,
    PartData,
    PartEnd,
    PartStart,
)
from streamproxy.intake.pump import Progress, Pump, Stage
from streamproxy.storage.local import LocalStorage

from .conftest import (
    VIAS,
    Service,
    ServiceFactory,
    field_part,
    file_part,
    http_post_head,
    md5,
    multipart_body,
    random_bytes,
    raw_request,
    require_program,
    run_program,
    upload_body,
    upload_head,
)

pytestmark = pytest.mark.every_s3_server  # publication without replacing, multipart sizes

PNG = b"\x89PNG\r\n\x1a\n" + random_bytes(3000, seed=1)


@pytest.mark.parametrize("via", [*VIAS, "post"])
async def test_contract_fields_and_etag_header(service: Service, via: str) -> None:
    data = random_bytes(48213)
    response = await service.upload(data, filename="photo.png", content_type="image/png", via=via)
    assert response.status == 200
    body = await response.json()
    assert set(body) == {"message", "name", "type", "size", "etag", "url"}
    assert body["message"] == "File uploaded successfully."
    assert body["name"] == "11111_photo.png"
    assert body["type"] == "image/png"
    assert body["size"] == 48213
    assert body["etag"] == md5(data)
    assert re.fullmatch(r"[0-9a-f]{32}", body["etag"])
    assert response.headers["ETag"] == f'"{md5(data)}"'
    assert body["url"] == f"{service.url}/files/download?filename=11111_photo.png"
    assert await service.fetch(body["name"]) == data
    service.assert_clean({"11111_photo.png"})


async def test_hybrid_chat_alias_answers_with_its_download_path(service: Service) -> None:
    body = await service.upload_json(b"hello", filename="a.txt", path="/api/uploadFileStream")
    assert body["url"] == f"{service.url}/api/downloadFileStream?filename=11111_a.txt"
    async with service.session.get(body["url"]) as response:
        assert response.status == 200
        assert await response.read() == b"hello"


@pytest.mark.parametrize("where", ["before", "after", "query"])
async def test_conversation_id_before_after_or_in_query(service: Service, where: str) -> None:
    boundary = "b0undary"
    parts = [file_part(b"content", "doc.txt", "text/plain")]
    if where == "before":
        parts.insert(0, field_part("conversationId", "777"))
    elif where == "after":
        parts.append(field_part("conversationId", "777"))
    body = multipart_body(boundary, parts)
    query = "?conversationId=777" if where == "query" else ""
    async with service.session.post(
        f"{service.url}/files{query}",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    ) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["name"] == "777_doc.txt"
    service.assert_clean({"777_doc.txt"})


async def test_form_field_wins_over_query(service: Service) -> None:
    form = aiohttp.FormData()
    form.add_field("file", b"x", filename="n.txt")
    form.add_field("conversationId", "form")
    async with service.session.post(
        service.url + "/files?conversationId=query", data=form
    ) as response:
        assert (await response.json())["name"] == "form_n.txt"


@pytest.mark.parametrize("via", VIAS)
async def test_type_is_sniffed_when_declared_generic_or_missing(service: Service, via: str) -> None:
    body = await service.upload_json(
        PNG, filename="pic", content_type="application/octet-stream", via=via
    )
    assert body["type"] == "image/png"
    body = await service.upload_json(b"%PDF-1.7\n...", filename="doc.pdf", via=via)
    assert body["type"] == "application/pdf"
    body = await service.upload_json(b"a,b\n1,2\n", filename="t.csv", via=via)
    assert body["type"] == "text/csv"


@pytest.mark.parametrize("via", VIAS)
async def test_declared_type_is_kept(service: Service, via: str) -> None:
    body = await service.upload_json(
        b"plain words", filename="x.dat", content_type="audio/ogg", via=via
    )
    assert body["type"] == "audio/ogg"


@pytest.mark.parametrize("via", VIAS)
async def test_garbage_declared_type_is_replaced_by_sniffing(service: Service, via: str) -> None:
    body = await service.upload_json(PNG, filename="p.png", content_type="not a type", via=via)
    assert body["type"] == "image/png"


async def test_existing_name_is_never_replaced(service: Service) -> None:
    first = await service.upload_json(b"first", filename="same.txt")
    second = await service.upload_json(b"second", filename="same.txt")
    assert first["name"] == "11111_same.txt"
    assert re.fullmatch(r"11111_same-[0-9a-f]{6}\.txt", second["name"])
    assert await service.fetch(first["name"]) == b"first"
    assert await service.fetch(second["name"]) == b"second"


async def test_unicode_names_survive(service: Service) -> None:
    body = await service.upload_json(b"x", filename="фото отпуск.jpg", content_type="image/jpeg")
    assert body["name"] == "11111_фото_отпуск.jpg"
    async with service.session.get(body["url"]) as response:
        assert response.status == 200
        assert (
            "filename*=UTF-8''%D1%84%D0%BE%D1%82%D0%BE" in response.headers["Content-Disposition"]
        )


async def test_awkward_characters_are_replaced(service: Service) -> None:
    body = await service.upload_json(b"x", filename='a<b>:c"d|e?f*g.txt')
    assert body["name"] == "11111_a_b_c_d_e_f_g.txt"


async def test_missing_file_name_gets_one_from_the_type(service: Service) -> None:
    boundary = "nameless"
    part = ({"Content-Disposition": 'form-data; name="file"'}, PNG)
    body = multipart_body(boundary, [field_part("conversationId", "3"), part])
    async with service.session.post(
        service.url + "/files",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    ) as response:
        assert (await response.json())["name"] == "3_file.png"


@pytest.mark.parametrize("via", VIAS)
async def test_empty_file_is_stored(service: Service, via: str) -> None:
    body = await service.upload_json(b"", filename="empty.txt", content_type="text/plain", via=via)
    assert body["size"] == 0
    assert body["etag"] == md5(b"")
    assert await service.fetch(body["name"]) == b""


async def test_public_url_and_base_path(start_service: ServiceFactory) -> None:
    service = await start_service(
        base_path="/media", public_url=__import__("yarl").URL("https://chat.example/file-engine")
    )
    body = await service.upload_json(b"x", filename="a.txt", path="/media/files")
    assert (
        body["url"] == "https://chat.example/file-engine/media/files/download?filename=11111_a.txt"
    )
    async with service.session.get(f"{service.url}/files", params={"filename": "x"}) as response:
        assert response.status == 404  # routes moved under the base path
    async with service.session.get(
        f"{service.url}/media/files/download", params={"filename": "11111_a.txt"}
    ) as response:
        assert await response.read() == b"x"


async def test_stat_document(service: Service) -> None:
    body = await service.upload_json(PNG, filename="s.png", content_type="image/png")
    async with service.session.get(
        service.url + "/files/stat", params={"filename": body["name"]}
    ) as response:
        assert response.status == 200
        stat = await response.json()
    assert stat["name"] == "11111_s.png"
    assert stat["type"] == "image/png"
    assert stat["size"] == len(PNG)
    assert stat["etag"] == md5(PNG)
    assert stat["conversationId"] == "11111"
    assert stat["channel"] is None
    assert stat["originalName"] == "s.png"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", stat["created"])
    async with service.session.get(
        service.url + "/api/getFileStat", params={"filename": body["name"]}
    ) as response:
        assert await response.json() == stat


async def test_fifty_concurrent_uploads_of_one_name(service: Service) -> None:
    payloads = [random_bytes(20_000 + i, seed=i) for i in range(50)]
    results = await asyncio.gather(
        *(
            service.upload_json(data, filename="race.bin", via=VIAS[i % 2])
            for i, data in enumerate(payloads)
        )
    )
    names = [result["name"] for result in results]
    assert len(set(names)) == 50
    for data, result in zip(payloads, results, strict=True):
        assert result["etag"] == md5(data)
        assert await service.fetch(result["name"]) == data
    service.assert_clean(set(names))


async def test_hand_made_request_with_preamble_and_padding(service: Service) -> None:
    boundary = "xyz"
    body = multipart_body(
        boundary,
        [field_part("conversationId", "42"), file_part(b"payload", "p.txt")],
        preamble=b"This is the preamble.\r\n",
    ).replace(b"--xyz\r\n", b"--xyz  \r\n", 1)
    answer = await raw_request(service.port, http_post_head("/files", boundary, len(body)), [body])
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert await service.fetch("42_p.txt") == b"payload"


@pytest.mark.parametrize("via", VIAS)
async def test_chunked_request_body(service: Service, via: str) -> None:
    body = upload_body(via, b"z" * 5000)
    chunked = b"".join(
        f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        for piece in (body[i : i + 777] for i in range(0, len(body), 777))
    )
    head = upload_head(via, None, "Transfer-Encoding: chunked\r\n")
    answer = await raw_request(service.port, head, [chunked, b"0\r\n\r\n"])
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert await service.fetch("1_a.bin") == b"z" * 5000


def _http_chunks(data: bytes, size: int) -> list[bytes]:
    return [
        f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
        for piece in (data[i : i + size] for i in range(0, len(data), size))
    ]


@pytest.mark.parametrize("piece_size", [1, 3, 9, 10, 11, 12, 4099])
async def test_delimiter_split_across_pieces(service: Service, piece_size: int) -> None:
    """The file's bytes arrive, after its part headers, in HTTP chunks of `piece_size`
    bytes, which aiohttp hands over one by one: the closing delimiter ("\r\n--chunky",
    10 bytes) then begins in one piece and ends in a later one, and the content holds
    near-misses of it."""
    boundary = "chunky"
    content = b"\r\n--chunk" + random_bytes(300, seed=piece_size) + b"\r\n--chunkx\r\n-"
    body = multipart_body(
        boundary, [field_part("conversationId", "8"), file_part(content, "s.bin")]
    )
    start = body.index(content)  # the part headers go first, on their own
    head = http_post_head("/files", boundary, None, "Transfer-Encoding: chunked\r\n")
    pieces = _http_chunks(body[:start], start) + _http_chunks(body[start:], piece_size)
    answer = await raw_request(
        service.port, head, [pieces[0], b"".join(pieces[1:]) + b"0\r\n\r\n"], pause=0.05
    )
    assert answer.startswith(b"HTTP/1.1 200"), answer[:300]
    assert await service.fetch("8_s.bin") == content


async def test_gzip_request_body_is_decoded(service: Service) -> None:
    import gzip

    data = random_bytes(100_000)
    form = aiohttp.FormData()
    form.add_field("conversationId", "5")
    form.add_field("file", data, filename="g.bin")
    payload = form()
    raw = b""

    class Sink:
        async def write(self, chunk: bytes) -> None:
            nonlocal raw
            raw += chunk

    await payload.write(Sink())  # type: ignore[arg-type]
    async with service.session.post(
        service.url + "/files",
        data=gzip.compress(raw),
        headers={"Content-Type": payload.content_type, "Content-Encoding": "gzip"},
    ) as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["etag"] == md5(data)


async def test_curl_upload_and_download(service: Service, tmp_path) -> None:
    curl = require_program("curl", "curl")
    source = tmp_path / "report 2026.pdf"
    data = b"%PDF-1.4\n" + random_bytes(200_000)
    source.write_bytes(data)
    code, stdout, _ = await run_program(
        curl,
        "-sS",
        "-D",
        "-",
        "-F",
        f"file=@{source}",
        "-F",
        "conversationId=c1",
        service.url + "/files",
    )
    assert code == 0
    head, _, payload = stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    body = json.loads(payload)
    assert body["name"] == "c1_report_2026.pdf"
    assert body["type"] == "application/pdf"
    target = tmp_path / "out.pdf"
    code, _, _ = await run_program(curl, "-sS", "-o", str(target), body["url"])
    assert code == 0
    assert target.read_bytes() == data


def _parse_in_pieces(body: bytes, size: int) -> list[tuple[str | None, bytes]]:
    """Feed the form parser `body` in pieces of `size` bytes; (part name, bytes) per part."""
    parser = FormParser(b"pieces", FormLimits())
    parts: list[tuple[str | None, bytes]] = []
    events = []
    for offset in range(0, len(body), size):
        events += parser.feed(body[offset : offset + size])
    events += parser.feed(b"")
    name: str | None = None
    data = bytearray()
    for event in events:
        if isinstance(event, PartStart):
            name, data = event.headers["Content-Disposition"].split('"')[1], bytearray()
        elif isinstance(event, PartData):
            data += event.data
        elif isinstance(event, PartEnd):
            parts.append((name, bytes(data)))
    assert isinstance(events[-1], FormEnd)
    return parts


@pytest.mark.parametrize("size", [*range(1, 14), 64, 4096])
def test_form_parser_at_every_piece_size(size: int) -> None:
    """The parser alone (no I/O), fed the whole envelope and body in pieces of every
    size: boundary lines, headers and delimiters split anywhere, near-misses kept."""
    content = b"\r\n--piece" + random_bytes(200, seed=size) + b"\r\n--piecex\r\n-"
    body = multipart_body(
        "pieces",
        [field_part("conversationId", "8"), file_part(content, "s.bin"), field_part("e", "")],
        preamble=b"preamble\r\n",
    )
    expected = [("conversationId", b"8"), ("file", content), ("e", b"")]
    assert _parse_in_pieces(body + b"epilogue", size) == expected
    with pytest.raises(MalformedForm, match="before the closing multipart boundary"):
        _parse_in_pieces(body[: body.index(content) + 50], size)


async def _one_piece(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def test_pump_goes_on_from_saved_progress(tmp_path: Path) -> None:
    """A file brought by two requests, as a resumable upload's PATCHes will bring it: the
    second pump starts from the first one's progress, so the MD5, the size, the cap and
    the type sniffed from the first bytes are the whole file's. (This writer stages a new
    object; appending to the first request's bytes is the resumable storage's part.)"""
    storage = LocalStorage(tmp_path / "data")
    await storage.start()

    def pump(start: Progress | None = None, max_size: int = len(PNG)) -> Pump:
        return Pump(
            storage,
            max_size=max_size,
            policy=TypePolicy(),
            declared_type=None,
            filename="",
            start=start,
        )

    try:
        cut = 100  # the first request ends inside the bytes the type is sniffed from
        async with pump() as first:
            await first.pump(_one_piece(PNG[:cut]), final=False)
            assert (first.stage, first.media_type) == (Stage.OPEN, None)
            saved = first.progress
        assert (saved.size, saved.head) == (cut, PNG[:cut])
        with pytest.raises(ApiError) as over:  # the cap counts the bytes already taken in
            async with pump(Progress(size=cut, head=PNG[:cut]), max_size=len(PNG) - 1) as again:
                await again.pump(_one_piece(PNG[cut:]))
        assert over.value.status == 413
        async with pump(saved) as second:
            await second.pump(_one_piece(PNG[cut:]))
            meta = await second.commit("r1")
        assert (meta.name, meta.info.type) == ("r1_file.png", "image/png")
        assert (meta.info.size, meta.info.etag) == (len(PNG), md5(PNG))
    finally:
        await storage.close()


async def test_gzip_raw_body_is_decoded(service: Service) -> None:
    import gzip

    data = random_bytes(100_000)
    async with service.session.put(
        service.url + "/files?conversationId=5&fileName=g.bin",
        data=gzip.compress(data),
        headers={"Content-Type": "application/octet-stream", "Content-Encoding": "gzip"},
    ) as response:
        assert response.status == 200, await response.text()
        body = await response.json()
    assert (body["etag"], body["size"]) == (md5(data), len(data))
    assert await service.fetch("5_g.bin") == data


@pytest.mark.parametrize(
    "header",
    [
        'form-data; name="file"; filename="a.bin"',
        'form-data; name="conversationId"',
        'form-data; name=""; filename=""',
        'form-data; name="f"; filename="/etc/passwd"',
        'form-data; name="f"; filename="a\\"b"',
        'form-data; name="f"; filename="a;b"',
        'form-data; name="f"; filename="r\u00e9sum\u00e9 %41.pdf"',
        'Form-Data; name="x"',
        'form-data;name="x"',
        'form-data; name="f"; filename="a"; filename*=UTF-8\'\'b',
        'form-data; name="f"; filename="\\\\x"',
        'form-data; name="a b"; filename=" x "',
        'attachment; name="file"',
        "",
        None,
    ],
)
def test_the_plain_disposition_shortcut_reads_as_aiohttp_does(header: str | None) -> None:
    """The shortcut for `form-data; name="..."; filename="..."` gives what aiohttp's
    parser gives, and every other shape still goes to that parser."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # aiohttp warns about the malformed ones
        assert parse_disposition(header) == parse_content_disposition(header)
