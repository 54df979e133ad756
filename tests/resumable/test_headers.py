"""Header parsing and formatting, with the protocol documents' own examples."""

from __future__ import annotations

import base64
import email.utils
import hashlib

import pytest

from streamproxy.resumable import headers, problems
from streamproxy.resumable.state import Protocol, new_id


def test_tus_metadata_example_from_protocol_md() -> None:
    value = "filename d29ybGRfZG9taW5hdGlvbl9wbGFuLnBkZg==,is_confidential"
    assert headers.parse_metadata(value) == {
        "filename": "world_domination_plan.pdf",
        "is_confidential": "",
    }
    assert headers.format_metadata(headers.parse_metadata(value)) == value


def test_metadata_tolerates_spaces_after_commas_and_keeps_unicode() -> None:
    name = base64.b64encode("répertoire ✓.pdf".encode()).decode()
    parsed = headers.parse_metadata(f"filename {name}, conversationId YzE=")
    assert parsed == {"filename": "répertoire ✓.pdf", "conversationId": "c1"}
    assert headers.parse_metadata(None) == {} == headers.parse_metadata(" ")


@pytest.mark.parametrize(
    "value",
    [
        "filename d29ybGQ=,filename YQ==",  # duplicate key
        "filename not*base64",
        "filename d29ybGQ",  # padding missing
        ",filename YQ==",  # empty key
        "filename /w==",  # base64 of a byte that is not UTF-8
        "naïve YQ==",  # key not ASCII
    ],
)
def test_bad_metadata_is_400(value: str) -> None:
    with pytest.raises(problems.BadHeader) as caught:
        headers.parse_metadata(value)
    assert caught.value.status == 400


def test_checksum_example_from_protocol_md_verifies_hello_world() -> None:
    checksum = headers.parse_checksum("sha1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=")
    assert checksum is not None and checksum.algorithm == "sha1"
    digest = checksum.new_hash()
    digest.update(b"hello world")
    checksum.verify(digest.digest())
    with pytest.raises(problems.ChecksumMismatch) as caught:
        checksum.verify(hashlib.sha1(b"hello world!").digest())
    assert caught.value.status == 460


@pytest.mark.parametrize("algorithm", ["md5", "sha256"])
def test_md5_and_sha256_checksums(algorithm: str) -> None:
    digest = hashlib.new(algorithm, b"abc").digest()
    checksum = headers.parse_checksum(f"{algorithm} {base64.b64encode(digest).decode()}")
    assert checksum == headers.Checksum(algorithm, digest)


@pytest.mark.parametrize(
    "value",
    [
        "crc32 AAAAAA==",  # tus's own OPTIONS example lists it; we do not support it
        "SHA1 Kq5sNclPz7QV2+lfQIuc6R7oRu0=",  # names are lowercase
        "sha1",
        "sha1 not-base64!",
        "md5 Kq5sNclPz7QV2+lfQIuc6R7oRu0=",  # a sha1-sized digest
    ],
)
def test_unknown_algorithm_or_bad_digest_is_400(value: str) -> None:
    with pytest.raises(problems.BadHeader) as caught:
        headers.parse_checksum(value)
    assert caught.value.status == 400
    assert headers.parse_checksum(None) is None


def test_concat_examples_from_protocol_md() -> None:
    assert headers.parse_concat("partial") == headers.Concat(partial=True)
    final = headers.parse_concat("final;/files/a /files/b")
    assert final == headers.Concat(partial=False, urls=("/files/a", "/files/b"))
    assert headers.format_concat(False, final.urls) == "final;/files/a /files/b"
    assert headers.parse_concat(None) is None


@pytest.mark.parametrize("value", ["final;", "final", "partial;x", "whole", "final; "])
def test_bad_concat_is_400(value: str) -> None:
    with pytest.raises(problems.BadHeader):
        headers.parse_concat(value)


def test_part_urls_absolute_or_relative_must_be_our_uploads() -> None:
    upload_id = new_id()
    for url in (f"/files/uploads/{upload_id}", f"https://cdn.example/files/uploads/{upload_id}"):
        assert headers.part_id(url, "/files/uploads") == upload_id
    for foreign in (
        f"/elsewhere/{upload_id}",
        "/files/uploads/../../etc/passwd",
        f"/files/uploads/{upload_id}/x",
        "/files/uploads/",
    ):
        with pytest.raises(problems.BadHeader):
            headers.part_id(foreign, "/files/uploads")


@pytest.mark.parametrize("value", ["0", "100", "007", "999999999999999"])
def test_offsets_and_lengths(value: str) -> None:
    assert headers.parse_uint(value, "Upload-Offset") == int(value)
    assert headers.parse_sf_integer(value) == int(value)


@pytest.mark.parametrize("value", ["-1", "+1", " 1", "1 ", "1.0", "0x10", "", "1e3", "\u0661"])
def test_tus_integers_have_no_signs_spaces_or_other_digits(value: str) -> None:
    with pytest.raises(problems.BadHeader):
        headers.parse_uint(value, "Upload-Length")


def test_draft_integers_ignore_invalid_values_and_allow_parameters() -> None:
    assert headers.parse_sf_integer("12500000") == 12500000
    assert headers.parse_sf_integer("10;foo=bar") == 10
    for ignored in (None, "-1", "1.5", "abc", "10;Bad", "1234567890123456"):
        assert headers.parse_sf_integer(ignored) is None


def test_defer_length_must_be_one() -> None:
    assert headers.parse_defer_length("1") is True
    assert headers.parse_defer_length(None) is False
    with pytest.raises(problems.BadHeader):
        headers.parse_defer_length("0")


def test_upload_complete_is_a_structured_boolean() -> None:
    assert headers.parse_upload_complete("?1") is True
    assert headers.parse_upload_complete("?0") is False
    assert headers.parse_upload_complete("?1;a=b") is True
    for ignored in (None, "1", "true", "?", "?2", ""):
        assert headers.parse_upload_complete(ignored) is None
    assert (headers.format_bool(True), headers.format_bool(False)) == ("?1", "?0")


def test_protocol_detection() -> None:
    assert headers.detect_protocol("1.0.0", None) is Protocol.TUS
    assert headers.detect_protocol(None, "6") is Protocol.DRAFT_6
    assert headers.detect_protocol(None, "8") is Protocol.DRAFT_8
    assert headers.detect_protocol("1.0.0", "8") is Protocol.DRAFT_8
    assert headers.interop_version_value(Protocol.DRAFT_8) == "8"
    assert headers.interop_version_value(Protocol.TUS) is None


@pytest.mark.parametrize(
    ("tus", "interop"), [(None, None), ("0.2.2", None), (None, "7"), (None, "5")]
)
def test_other_versions_are_412(tus: str | None, interop: str | None) -> None:
    with pytest.raises(problems.UnsupportedVersion) as caught:
        headers.detect_protocol(tus, interop)
    assert (caught.value.status, caught.value.code) == (412, "unsupported_version")


def test_upload_limit_and_expires_formats() -> None:
    assert headers.format_upload_limit(1234567890) == "max-size=1234567890"
    assert headers.format_upload_limit(5, max_age=3600) == "max-size=5, max-age=3600"
    expires = headers.format_expires(1_700_000_000)
    assert expires == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert email.utils.parsedate_to_datetime(expires).timestamp() == 1_700_000_000


def test_extensions_advertise_checksum_trailer_only_when_asked() -> None:
    assert "checksum-trailer" not in headers.format_extensions(checksum_trailer=False)
    assert "checksum-trailer," in headers.format_extensions(checksum_trailer=True)
    assert headers.format_extensions(checksum_trailer=False).startswith("creation,")


def test_problem_types_follow_the_draft_example_and_version() -> None:
    mismatch = problems.OffsetMismatch(expected=12500000, provided=25000000)
    assert headers.problem_fields(mismatch, Protocol.DRAFT_8) == {
        "type": "https://iana.org/assignments/http-problem-types#mismatching-upload-offset",
        "title": "offset from request does not match offset of resource",
        "expected-offset": 12500000,
        "provided-offset": 25000000,
    }
    assert headers.problem_fields(mismatch, Protocol.TUS) == {}
    length = problems.LengthMismatch("changed")
    assert headers.problem_fields(length, Protocol.DRAFT_8)["type"] == (
        "https://iana.org/assignments/http-problem-types#inconsistent-upload-length"
    )
    assert headers.problem_fields(length, Protocol.DRAFT_6) == {}  # not in draft -05
    done = problems.AlreadyComplete("done")
    assert headers.problem_fields(done, Protocol.DRAFT_6)["type"].endswith("#completed-upload")
    assert headers.problem_fields(done, Protocol.DRAFT_8) == {}  # removed after -05
