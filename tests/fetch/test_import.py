"""Upload from a URL: the happy paths, naming and typing, credentials and redirects."""

from __future__ import annotations

import base64
import hashlib
import logging

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamproxy.intake.mediatypes import parse_type_rule

from ..conftest import ServiceFactory, md5, random_bytes
from .conftest import (
    ALLOW_SOURCES,
    import_error,
    import_ok,
    job,
    post_import,
)
from .sources import Source, gzipped, response_head

PNG = b"\x89PNG\r\n\x1a\n" + random_bytes(2000, seed=7)


async def test_import_streams_the_source_into_storage(importer, source: Source) -> None:
    data = random_bytes(3 * 1024 * 1024 + 17)
    url = source.file("/media/clip.mp4", data, headers={"Content-Type": "video/mp4"})
    body = await import_ok(importer, url)
    assert body["message"] == "File uploaded successfully."
    assert body["name"] == "11111_clip.mp4"
    assert body["type"] == "video/mp4"
    assert body["size"] == len(data)
    assert body["etag"] == md5(data)
    assert body["url"] == f"{importer.url}/files/download?filename=11111_clip.mp4"
    assert await importer.fetch("11111_clip.mp4") == data
    importer.assert_clean({"11111_clip.mp4"})


async def test_an_import_counts_exactly_its_bytes(importer, source: Source) -> None:
    """received_bytes_total{kind="import"} moves by the file's size, and no other kind;
    so does hashing_seconds_total."""
    data = random_bytes(700_001, seed=5)
    url = source.file("/counted.bin", data)

    async def counters(name: str) -> dict[str, float]:
        async with importer.session.get(importer.url + "/metrics") as response:
            text = await response.text()
        found = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name:
                    found[sample.labels["kind"]] = sample.value
        return found

    received, hashing = "streamproxy_received_bytes_total", "streamproxy_hashing_seconds_total"
    before, hashed_before = await counters(received), await counters(hashing)
    await import_ok(importer, url)
    after, hashed_after = await counters(received), await counters(hashing)
    assert after["import"] - before.get("import", 0) == len(data)
    assert after.get("upload", 0) == before.get("upload", 0)
    # Its hashing is counted under its kind too (the import's pump, as an upload's).
    assert hashed_after["import"] > hashed_before.get("import", 0)
    assert hashed_after.get("upload", 0) == hashed_before.get("upload", 0)


async def test_channel_and_conversation_are_kept_as_metadata(importer, source: Source) -> None:
    url = source.file("/a.txt", b"hello", headers={"Content-Type": "text/plain"})
    await import_ok(importer, url, channel="web", conversationId=4711)
    async with importer.session.get(
        importer.url + "/files/stat", params={"filename": "4711_a.txt"}
    ) as response:
        stat = await response.json()
    assert stat["channel"] == "web"
    assert stat["conversationId"] == "4711"


async def test_conversation_id_is_optional(importer, source: Source) -> None:
    url = source.file("/doc.pdf", b"%PDF-1.7 tiny")
    response, body = await post_import(importer, {"sourceUrl": url, "channel": "web"})
    assert response.status == 200, body
    assert body["name"] == "doc.pdf"
    assert body["type"] == "application/pdf"


# --- naming ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "headers", "fields", "expected"),
    [
        # fileName wins over everything the source says
        (
            "/x/y.bin",
            {"Content-Disposition": 'attachment; filename="cd.png"'},
            {"fileName": "mine.png"},
            "11111_mine.png",
        ),
        # RFC 6266: filename* (UTF-8) before filename
        (
            "/x/y.bin",
            {
                "Content-Disposition": 'attachment; filename="plain.png"; '
                "filename*=UTF-8''%C3%A9t%C3%A9.png"
            },
            {},
            "11111_été.png",
        ),
        ("/x/y.bin", {"Content-Disposition": 'inline; filename="cd.png"'}, {}, "11111_cd.png"),
        # a path in the source's name is cut to its last segment
        (
            "/x/y.bin",
            {"Content-Disposition": 'attachment; filename="../../etc/evil.png"'},
            {},
            "11111_evil.png",
        ),
        # else the URL's last segment, percent-decoded
        ("/photos/summer%20beach.png", {}, {}, "11111_summer_beach.png"),
        # else file.<extension of the type>
        ("/attachments/", {}, {}, "11111_file.png"),
        # no conversationId: no prefix
        ("/n/pic.png", {}, {"conversationId": None}, "pic.png"),
    ],
)
async def test_naming(importer, source: Source, path, headers, fields, expected) -> None:
    url = source.file(path, PNG, headers={"Content-Type": "image/png", **headers})
    body = await import_ok(importer, url, **fields)
    assert body["name"] == expected
    importer.assert_clean({expected})


async def test_names_are_unique_and_never_replace(importer, source: Source) -> None:
    url = source.file("/same.png", PNG)
    first = await import_ok(importer, url)
    second = await import_ok(importer, url)
    assert first["name"] == "11111_same.png"
    assert second["name"] != first["name"]
    assert second["name"].startswith("11111_same-") and second["name"].endswith(".png")


async def test_a_bad_file_name_is_refused_naming_the_field(importer, source: Source) -> None:
    url = source.file("/ok.png", PNG)
    detail = await import_error(importer, url, 400, "bad_request", fileName="../up.png")
    assert "fileName" in detail
    importer.assert_nothing_stored()
    assert source.connections == 0


# --- type ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "fields", "expected"),
    [
        ("image/png", {"mime_type": "image/x-custom"}, "image/x-custom"),  # mime_type wins
        ("image/gif", {}, "image/gif"),  # else the response's Content-Type
        (None, {}, "image/png"),  # else sniffed
        ("application/octet-stream", {}, "image/png"),  # octet-stream means "unknown"
    ],
)
async def test_type(importer, source: Source, content_type, fields, expected) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    url = source.file("/t", PNG, headers=headers)
    body = await import_ok(importer, url, **fields)
    assert body["type"] == expected


async def test_type_rules_apply_to_imports(start_service: ServiceFactory, source: Source) -> None:
    service = await start_service(
        fetch_allow=ALLOW_SOURCES, deny_type=(parse_type_rule("image/*"),)
    )
    url = source.file("/pic", PNG, headers={"Content-Type": "application/octet-stream"})
    await import_error(service, url, 415, "type_not_allowed")
    service.assert_nothing_stored()


# --- encodings -------------------------------------------------------------------------


async def test_gzip_is_decoded_and_the_decoded_bytes_stored(importer, source: Source) -> None:
    data = b"line of text\n" * 50_000
    url = source.file(
        "/log.txt",
        gzipped(data),
        headers={"Content-Encoding": "gzip", "Content-Type": "text/plain"},
    )
    body = await import_ok(importer, url)
    assert body["size"] == len(data)
    assert body["etag"] == md5(data)
    assert await importer.fetch(body["name"]) == data


async def test_chunked_source_without_length(importer, source: Source) -> None:
    data = random_bytes(300_000, seed=3)
    chunks = b"".join(
        f"{len(data[i : i + 65536]):x}\r\n".encode() + data[i : i + 65536] + b"\r\n"
        for i in range(0, len(data), 65536)
    )
    url = source.script(
        "/chunked",
        response_head(200, None, {"Transfer-Encoding": "chunked"}),
        chunks,
        0.05,
        b"0\r\n\r\n",
    )
    body = await import_ok(importer, url)
    assert body["etag"] == md5(data)


# --- sha256 ----------------------------------------------------------------------------


async def test_sha256_hex_and_base64_are_checked(importer, source: Source) -> None:
    data = random_bytes(100_000, seed=11)
    digest = hashlib.sha256(data).digest()
    url = source.file("/v.bin", data)
    await import_ok(importer, url, sha256=digest.hex(), fileName="hex.bin")
    await import_ok(importer, url, sha256=digest.hex().upper(), fileName="upper.bin")
    await import_ok(importer, url, sha256=base64.b64encode(digest).decode(), fileName="b64.bin")
    importer.assert_clean({"11111_hex.bin", "11111_upper.bin", "11111_b64.bin"})


async def test_sha256_mismatch_stores_nothing(importer, source: Source) -> None:
    url = source.file("/v.bin", random_bytes(100_000, seed=11))
    detail = await import_error(
        importer, url, 502, "source_failed", sha256=hashlib.sha256(b"other").hexdigest()
    )
    assert "SHA-256" in detail
    importer.assert_nothing_stored()


# --- credentials and redirects ---------------------------------------------------------

CREDENTIALS = {
    "APIKey360": "d360-secret-key",
    "oauth": {"access_token": "oauth-secret-token", "token_type": "Bearer", "expires_in": 3600},
}


async def test_credentials_are_sent_to_the_source(importer, source: Source) -> None:
    url = source.file("/private.png", PNG)
    await import_ok(importer, url, **CREDENTIALS)
    (seen,) = source.seen
    assert seen.headers["d360-api-key"] == "d360-secret-key"
    assert seen.headers["authorization"] == "Bearer oauth-secret-token"


@pytest.mark.parametrize(
    ("oauth", "expected"),
    [
        ({"access_token": "t0k"}, "Bearer t0k"),  # token_type defaults to Bearer
        ({"access_token": "t0k", "token_type": "MAC"}, "MAC t0k"),
        ("t0k", "Bearer t0k"),  # a bare string is a bearer token
    ],
)
async def test_oauth_shapes(importer, source: Source, oauth, expected) -> None:
    await import_ok(importer, source.file("/o.png", PNG), oauth=oauth)
    assert source.seen[0].headers["authorization"] == expected
    assert "d360-api-key" not in source.seen[0].headers


async def test_credentials_follow_a_same_origin_redirect(importer, source: Source) -> None:
    source.file("/final.png", PNG)
    start = source.redirect("/start", "/final.png", status=301)
    body = await import_ok(importer, start, **CREDENTIALS)
    assert body["name"] == "11111_final.png"
    assert [seen.target for seen in source.seen] == ["/start", "/final.png"]
    for seen in source.seen:
        assert seen.headers["authorization"] == "Bearer oauth-secret-token"
        assert seen.headers["d360-api-key"] == "d360-secret-key"
    assert await importer.fetch(body["name"]) == PNG  # the redirect target's bytes


async def test_credentials_are_dropped_on_a_cross_origin_redirect(
    importer, source: Source, other_source: Source
) -> None:
    back_png = PNG + b"from the first origin"
    other_source.file("/cdn.png", PNG + b"never asked for")
    back = source.file("/back.png", back_png)
    # first origin -> other origin -> back to the first origin
    other_source.redirect("/bounce", back, status=307)
    start = source.redirect("/start", other_source.url("/bounce"), status=302)
    body = await import_ok(importer, start, **CREDENTIALS)
    first, last = source.seen
    assert (first.target, last.target) == ("/start", "/back.png")
    assert first.headers["authorization"] == "Bearer oauth-secret-token"
    assert first.headers["d360-api-key"] == "d360-secret-key"
    (middle,) = other_source.seen
    assert middle.target == "/bounce"  # only the redirect: its /cdn.png was never asked for
    for seen in (middle, last):  # once the chain left the origin, never again
        assert "authorization" not in seen.headers
        assert "d360-api-key" not in seen.headers
    assert await importer.fetch(body["name"]) == back_png


async def test_five_redirects_are_followed_and_six_refused(importer, source: Source) -> None:
    source.file("/hop0", PNG)
    for hop in range(1, 7):
        source.redirect(f"/hop{hop}", f"/hop{hop - 1}", status=308 if hop % 2 else 303)
    body = await import_ok(importer, source.url("/hop5"), fileName="five.png")
    assert body["size"] == len(PNG)
    detail = await import_error(importer, source.url("/hop6"), 502, "source_failed")
    assert "5" in detail
    importer.assert_clean({"11111_five.png"})


async def test_secrets_never_reach_the_log(
    importer, source: Source, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    url = source.file("/missing-secret-path/x", b"", status=404)
    url += "?token=query-secret"
    await import_error(importer, url, 502, "source_failed", **CREDENTIALS)
    assert caplog.records
    for secret in ("d360-secret-key", "oauth-secret-token", "query-secret", "missing-secret"):
        assert secret not in caplog.text


async def test_api_key_is_required_when_configured(
    start_service: ServiceFactory, source: Source
) -> None:
    service = await start_service(fetch_allow=ALLOW_SOURCES, api_key=("k1",))
    response, body = await post_import(service, job(source.file("/a.png", PNG)))
    assert response.status == 401
    assert source.connections == 0
    response, body = await post_import(
        service, job(source.url("/a.png")), headers={"Authorization": "Bearer k1"}
    )
    assert response.status == 200, body
