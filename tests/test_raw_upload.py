"""The raw-body upload (API.md: `PUT /files?conversationId=ID&fileName=NAME`), and the
same through `POST /files` with a Content-Type that is not multipart. The rules it
shares with `POST /files` are tested over both routes in test_upload.py,
test_upload_refusals.py and test_faults.py; here is what is its own."""

from __future__ import annotations

import json

import pytest

from .conftest import Service, md5, random_bytes, require_program, run_program
from .test_upload_refusals import expect_error

pytestmark = pytest.mark.every_s3_server  # publication without replacing, multipart sizes

PNG = b"\x89PNG\r\n\x1a\n" + random_bytes(3000, seed=1)


async def curl_json(*args: str) -> dict[str, object]:
    curl = require_program("curl", "curl")
    code, stdout, stderr = await run_program(curl, "-sS", *args)
    assert code == 0, stderr
    body: dict[str, object] = json.loads(stdout)
    return body


async def test_curl_put_and_post_the_file_itself(service: Service, tmp_path) -> None:
    """`curl -T` sends no Content-Type and `--data-binary` sends a form's: both are sniffed;
    a Content-Type the client sets is kept."""
    source = tmp_path / "scan 7.pdf"
    data = b"%PDF-1.4\n" + random_bytes(200_000)
    source.write_bytes(data)
    put = await curl_json(
        "-T", str(source), service.url + "/files?conversationId=c1&fileName=a.pdf"
    )
    assert (put["name"], put["type"], put["size"], put["etag"]) == (
        "c1_a.pdf", "application/pdf", len(data), md5(data),
    )  # fmt: skip
    post = await curl_json("--data-binary", f"@{source}", service.url + "/files?conversationId=c1")
    assert (post["name"], post["type"]) == ("c1_file.pdf", "application/pdf")
    typed = await curl_json(
        "-T", str(source), "-H", "Content-Type: application/x-custom",
        service.url + "/files?conversationId=c1&fileName=b.bin",
    )  # fmt: skip
    assert typed["type"] == "application/x-custom"
    for body in (put, post, typed):
        assert await service.fetch(str(body["name"])) == data
    service.assert_clean({"c1_a.pdf", "c1_file.pdf", "c1_b.bin"})


async def test_a_multipart_type_on_put_is_the_file_s_type(service: Service) -> None:
    """PUT never parses a form: the body is stored as it came."""
    body = b"--b\r\nContent-Disposition: form-data; name=file\r\n\r\nx\r\n--b--\r\n"
    response = await service.upload_raw(
        body, filename="form.txt", content_type="multipart/form-data; boundary=b"
    )
    assert response.status == 200, await response.text()
    assert await service.fetch("11111_form.txt") == body


@pytest.mark.parametrize(
    "filename", ["../../etc/passwd", "..", "a/b.txt", "a\\b.txt", "nul\x00.txt", "é" * 200]
)
async def test_bad_file_names_in_the_query(service: Service, filename: str) -> None:
    response = await service.upload_raw(PNG, filename=filename)
    await expect_error(response, 400, "bad_request")
    service.assert_nothing_stored()


async def test_an_empty_body_needs_a_name(service: Service) -> None:
    response = await service.upload_raw(b"", filename=None)
    assert "no file was sent" in await expect_error(response, 400, "bad_request")
    service.assert_nothing_stored()


async def test_a_post_without_content_type_is_still_refused(service: Service) -> None:
    """No Content-Type says neither form nor file: 400, as before the raw route."""
    async with service.session.post(
        service.url + "/files?conversationId=1&fileName=x.bin",
        data=b"bytes",
        skip_auto_headers=["Content-Type"],
    ) as response:
        await expect_error(response, 400, "bad_request")
    service.assert_nothing_stored()
