"""Naming and type rules on their own: the tables the HTTP tests rely on."""

from __future__ import annotations

import re
import sys
import unicodedata
from pathlib import PurePosixPath

import pytest

from streamproxy.intake import naming
from streamproxy.intake.mediatypes import (
    TypePolicy,
    extension_of,
    is_active,
    normalize_media_type,
    parse_type_rule,
    type_from_extension,
)
from streamproxy.intake.sniff import choose_type, sniff_bytes


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x89PNG\r\n\x1a\n....", "image/png"),
        (b"\xff\xd8\xff\xe0JFIF", "image/jpeg"),
        (b"GIF89a..", "image/gif"),
        (b"RIFF\x10\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"%PDF-1.4", "application/pdf"),
        (b"\x00\x00\x00\x18ftypmp42", "video/mp4"),
        (b"\x00\x00\x00\x18ftypheic", "image/heic"),
        (b"OggS\x00\x02", "application/ogg"),
        (b"ID3\x03\x00", "audio/mpeg"),
        (b"PK\x03\x04\x14\x00", "application/zip"),
        (b"  <!DOCTYPE html><html>", "text/html"),
        (b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
        (b"<?xml version='1.0'?><note/>", "text/xml"),
        (b"plain old text\nwith lines", "text/plain"),
        (b"\xef\xbb\xbfbom text", "text/plain; charset=utf-8"),
        (b"\x00\x01\x02binary", "application/octet-stream"),
        (b"", "application/octet-stream"),
    ],
)
def test_sniffing(data: bytes, expected: str) -> None:
    assert sniff_bytes(data) == expected


@pytest.mark.parametrize(
    ("declared", "sniffed", "filename", "expected"),
    [
        ("image/png", "text/plain", "x.png", "image/png"),  # declared wins
        (
            None,
            "application/zip",
            "r.docx",
            "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        ),
        (None, "application/zip", "r.zip", "application/zip"),
        (None, "text/plain", "t.csv", "text/csv"),
        (None, "application/octet-stream", "v.mp3", "audio/mpeg"),
        (None, "application/octet-stream", "evil.html", "application/octet-stream"),
        (None, "text/plain", "a.exe", "text/plain"),
        ("application/octet-stream", "image/gif", "a.bin", "image/gif"),
    ],
)
def test_choosing_the_stored_type(
    declared: str | None, sniffed: str, filename: str, expected: str
) -> None:
    assert choose_type(declared, sniffed, filename) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("image/PNG", "image/png"),
        ("text/plain; charset=UTF-8", "text/plain; charset=utf-8"),
        ('text/plain;charset="latin1"; x=y', "text/plain; charset=latin1"),
        ("application/json; charset=utf-8", "application/json"),
        ("bad", None),
        ("a/b\r\nX-Injected: 1", None),
        ("", None),
        (None, None),
    ],
)
def test_declared_types_are_normalised(raw: str | None, expected: str | None) -> None:
    assert normalize_media_type(raw) == expected


def test_active_types() -> None:
    for media_type in (
        "text/html",
        "image/svg+xml",
        "application/xhtml+xml",
        "text/javascript",
        "application/rss+xml",
        "TEXT/HTML; charset=utf-8",
    ):
        assert is_active(media_type)
    for media_type in ("image/png", "video/mp4", "application/pdf", "text/plain"):
        assert not is_active(media_type)


def test_type_policy() -> None:
    policy = TypePolicy(
        allow=(parse_type_rule("image/*"), parse_type_rule("pdf")),
        deny=(parse_type_rule("image/svg+xml"),),
    )
    assert policy.refusal("a.png", "image/png", "image/png") is None
    assert policy.refusal("a.pdf", "application/octet-stream", None) is None  # by extension
    assert policy.refusal("a.svg", "image/svg+xml", "image/svg+xml") is not None
    assert "accepted: image/*, .pdf" in (policy.refusal("a.txt", "text/plain", None) or "")


@pytest.mark.parametrize(
    ("conversation_id", "name", "media_type", "expected"),
    [
        ("1", "photo.png", "image/png", "1_photo.png"),
        ("1", "", "image/png", "1_file.png"),
        (None, "", "application/x-unknown", "file"),
        ("1", "a" * 300 + ".jpeg", "image/jpeg", "1_" + "a" * 193 + ".jpeg"),
        ("1", "ü" * 150 + ".txt", "text/plain", "1_" + "ü" * 97 + ".txt"),
    ],
)
def test_base_names(conversation_id: str | None, name: str, media_type: str, expected: str) -> None:
    assert naming.base_name(conversation_id, name, media_type) == expected
    assert len(expected.encode()) <= naming.MAX_STORED_NAME_BYTES


def test_candidates_keep_the_extension() -> None:
    names = list(naming.candidates("1_photo.png"))
    assert names[0] == "1_photo.png"
    assert all(re.fullmatch(r"1_photo-[0-9a-f]{6}\.png", name) for name in names[1:])
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("photo.png", "photo.png"),
        ("  spaced  name.txt ", "spaced_name.txt"),
        ("...hidden", "hidden"),
        ("gnp.\u202eexe", "gnp.exe"),
        ("trailing. ", "trailing"),
        ("e\u0301.txt", "é.txt"),
    ],
)
def test_clean_client_names(raw: str, clean: str) -> None:
    assert naming.clean_client_name(raw) == clean


@pytest.mark.parametrize("raw", ["a\x00b.txt", "tab\there", "del\x7f", "nel\x85.png", "\ud800x"])
def test_control_characters_in_a_client_name_are_refused(raw: str) -> None:
    with pytest.raises(naming.BadName, match="control characters"):
        naming.clean_client_name(raw)
    with pytest.raises(naming.BadName, match="control characters"):
        naming.check_stored_name(raw)


def test_the_control_pattern_is_exactly_unicodes_control_and_surrogate_categories() -> None:
    """One regular expression stands in for a category lookup per character: every code
    point must get the same answer from both."""
    differing = [
        code
        for code in range(sys.maxunicode + 1)
        if bool(naming._CONTROL.search(chr(code)))
        != (unicodedata.category(chr(code)) in {"Cc", "Cs"})
    ]
    assert differing == []


def test_an_ascii_name_has_no_format_characters_to_drop() -> None:
    """The ASCII shortcut skips normalization and the Cf filter: neither changes ASCII."""
    printable = "".join(chr(code) for code in range(0x20, 0x7F) if chr(code) not in "/\\")
    assert unicodedata.normalize("NFC", printable) == printable
    assert all(unicodedata.category(ch) != "Cf" for ch in printable)
    assert naming.clean_client_name("soft\u00adhyphen.txt") == "softhyphen.txt"


@pytest.mark.parametrize(
    "name",
    [
        "report.PDF",
        "a.b.c",
        ".bashrc",
        "trailing.",
        "..",
        ".",
        "",
        "noext",
        "dir/x.png",
        "dir.d/noext",
        "a/.hidden",
        "x..y",
        "été.JPEG",
        "a b.tar.gz",
    ],
)
def test_the_extension_is_what_a_path_would_say(name: str) -> None:
    """extension_of avoids building a path for a plain name; the answer must not change."""
    assert extension_of(name) == PurePosixPath(name).suffix.lower()


def test_the_type_from_an_extension_is_case_blind_and_repeatable() -> None:
    assert type_from_extension("scan.PDF") == type_from_extension("scan.pdf") == "application/pdf"
    assert type_from_extension("noext") is None
    assert type_from_extension("noext") is None  # asked again: the remembered answer
