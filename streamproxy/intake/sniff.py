"""Type sniffing from a file's first bytes, after the WHATWG MIME Sniffing Standard.

Used when a client declares no type or `application/octet-stream`, and to check
deny rules against what the bytes really are. Only the first chunk is looked at
(the standard's resource header is 1445 bytes), so sniffing costs nothing per chunk.
"""

from __future__ import annotations

from .mediatypes import OCTET_STREAM, essence, is_active, type_from_extension

HEADER_SIZE = 1445

# (mask, pattern, type, leading whitespace skipped) from the standard's tables:
# "identifying an unknown MIME type", images, audio and video, fonts, archives.
_WS = b"\t\n\x0c\r "
_Pattern = tuple[bytes | None, bytes, str]

_HTML_TAGS = (
    b"<!DOCTYPE HTML",
    b"<HTML",
    b"<HEAD",
    b"<SCRIPT",
    b"<IFRAME",
    b"<H1",
    b"<DIV",
    b"<FONT",
    b"<TABLE",
    b"<A",
    b"<STYLE",
    b"<TITLE",
    b"<B",
    b"<BODY",
    b"<BR",
    b"<P",
    b"<!--",
)

_BINARY_PATTERNS: tuple[_Pattern, ...] = (
    (None, b"%PDF-", "application/pdf"),
    (None, b"%!PS-Adobe-", "application/postscript"),
    (None, b"GIF87a", "image/gif"),
    (None, b"GIF89a", "image/gif"),
    (None, b"\x89PNG\r\n\x1a\n", "image/png"),
    (None, b"\xff\xd8\xff", "image/jpeg"),
    (None, b"BM", "image/bmp"),
    (None, b"\x00\x00\x01\x00", "image/x-icon"),
    (None, b"\x00\x00\x02\x00", "image/x-icon"),
    (
        b"\xff\xff\xff\xff\x00\x00\x00\x00\xff\xff\xff\xff\xff\xff",
        b"RIFF\x00\x00\x00\x00WEBPVP",
        "image/webp",
    ),
    (b"\xff\xff\xff\xff\x00\x00\x00\x00\xff\xff\xff\xff", b"RIFF\x00\x00\x00\x00WAVE", "audio/wav"),
    (
        b"\xff\xff\xff\xff\x00\x00\x00\x00\xff\xff\xff\xff",
        b"RIFF\x00\x00\x00\x00AVI ",
        "video/x-msvideo",
    ),
    (
        b"\xff\xff\xff\xff\x00\x00\x00\x00\xff\xff\xff\xff",
        b"FORM\x00\x00\x00\x00AIFF",
        "audio/aiff",
    ),
    (None, b"ID3", "audio/mpeg"),
    (None, b"OggS\x00", "application/ogg"),
    (None, b"MThd\x00\x00\x00\x06", "audio/midi"),
    (None, b"#!AMR\n", "audio/amr"),
    (None, b"fLaC", "audio/flac"),
    (None, b"\x1a\x45\xdf\xa3", "video/webm"),
    (None, b"wOFF", "font/woff"),
    (None, b"wOF2", "font/woff2"),
    (None, b"\x1f\x8b\x08", "application/gzip"),
    (None, b"PK\x03\x04", "application/zip"),
    (None, b"Rar!\x1a\x07\x00", "application/vnd.rar"),
    (None, b"Rar!\x1a\x07\x01\x00", "application/vnd.rar"),
    (None, b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (None, b"MZ", "application/vnd.microsoft.portable-executable"),
    (None, b"\x7fELF", "application/x-executable"),
)

# Bytes that make a resource binary (WHATWG "binary data byte"), and the rest, so that
# `translate` can drop every other byte in C and leave only the binary ones.
_BINARY_BYTES = frozenset([*range(0x00, 0x09), 0x0B, *range(0x0E, 0x1B), *range(0x1C, 0x20)])
_NOT_BINARY = bytes(byte for byte in range(256) if byte not in _BINARY_BYTES)


def _by_first_byte(patterns: tuple[_Pattern, ...]) -> dict[int, tuple[_Pattern, ...]]:
    """The patterns by their first byte, in table order: only the few that start with a
    resource's first byte can match it, so only those are tried. (Every mask keeps the
    first byte whole, so a masked pattern's first byte must match exactly too.)"""
    table: dict[int, list[_Pattern]] = {}
    for mask, pattern, media_type in patterns:
        if mask is not None and mask[0] != 0xFF:
            raise ValueError(f"a mask that changes the first byte: {pattern!r}")
        table.setdefault(pattern[0], []).append((mask, pattern, media_type))
    return {first: tuple(entries) for first, entries in table.items()}


_PATTERNS_BY_FIRST_BYTE = _by_first_byte(_BINARY_PATTERNS)


def _matches(data: bytes, mask: bytes | None, pattern: bytes) -> bool:
    if len(data) < len(pattern):
        return False
    if mask is None:
        return data.startswith(pattern)
    return all((data[i] & mask[i]) == pattern[i] for i in range(len(pattern)))


def _sniff_markup(data: bytes) -> str | None:
    """HTML, XML and SVG by their first tag, skipping leading whitespace."""
    stripped = data.lstrip(_WS)
    if not stripped.startswith(b"<"):  # every tag below begins so
        return None
    upper = stripped[:64].upper()
    for tag in _HTML_TAGS:
        if upper.startswith(tag):
            follow = stripped[len(tag) : len(tag) + 1]
            if tag == b"<!--" or follow in (b" ", b">"):
                return "text/html"
    if upper.startswith(b"<?XML") or upper.startswith(b"<SVG"):
        # The standard stops at XML; an SVG document is worth telling apart,
        # because it is active content and often on deny lists.
        if b"<svg" in data.lower():
            return "image/svg+xml"
        return "text/xml"
    return None


def _sniff_mp4_family(data: bytes) -> str | None:
    """ISO base media files: the `ftyp` box and its major brand."""
    if len(data) < 12 or data[4:8] != b"ftyp":
        return None
    brand = data[8:12]
    if brand in (b"heic", b"heix", b"mif1", b"msf1"):
        return "image/heic"
    if brand == b"avif":
        return "image/avif"
    if brand.startswith(b"3gp"):
        return "video/3gpp"
    if brand == b"M4A ":
        return "audio/mp4"
    return "video/mp4"


def _sniff_mp3_frame(data: bytes) -> bool:
    return len(data) >= 4 and data[0] == 0xFF and (data[1] & 0xE0) == 0xE0 and data[1] & 0x06 != 0


def sniff_bytes(data: bytes) -> str:
    """The type the first bytes of a file show, `text/plain` or `application/octet-stream`."""
    header = data[:HEADER_SIZE]
    if not header:
        return OCTET_STREAM
    for bom, kind in ((b"\xfe\xff", "utf-16be"), (b"\xff\xfe", "utf-16le"), (b"\xef\xbb\xbf", "")):
        if header.startswith(bom):
            return f"text/plain; charset={kind}" if kind else "text/plain; charset=utf-8"
    markup = _sniff_markup(header)
    if markup:
        return markup
    for mask, pattern, media_type in _PATTERNS_BY_FIRST_BYTE.get(header[0], ()):
        if _matches(header, mask, pattern):
            return media_type
    family_match = _sniff_mp4_family(header)
    if family_match:
        return family_match
    if _sniff_mp3_frame(header):
        return "audio/mpeg"
    if header.translate(None, _NOT_BINARY):
        return OCTET_STREAM
    return "text/plain"


_GENERIC = frozenset({OCTET_STREAM, "text/plain", "application/zip"})
# Formats that are zip files inside: their extension names them better than "zip".
_ZIP_BASED_PREFIXES = (
    "application/vnd.openxmlformats",
    "application/vnd.oasis",
    "application/epub",
)


def choose_type(declared: str | None, sniffed: str, filename: str) -> str:
    """The type to store: the declared one, else the sniffed one refined by the extension.

    The sniffer only recognises a few generic classes for documents and text
    (zip, text, unknown binary); for those, a file's extension names the format
    better (`.docx` is a zip, `.csv` is text). The extension never turns bytes the
    sniffer calls binary into active content or text.
    """
    if declared and essence(declared) != OCTET_STREAM:
        return declared
    sniffed_essence = essence(sniffed)
    if sniffed_essence not in _GENERIC:
        return sniffed
    by_extension = type_from_extension(filename)
    if by_extension is None:
        return sniffed
    if sniffed_essence == "application/zip":
        return by_extension if by_extension.startswith(_ZIP_BASED_PREFIXES) else sniffed
    if sniffed_essence == "text/plain":
        return by_extension if _is_textual(by_extension) else sniffed
    # Unknown binary: trust the extension unless it claims text or active content.
    if _is_textual(by_extension) or is_active(by_extension):
        return sniffed
    return by_extension


def _is_textual(media_type: str) -> bool:
    value = essence(media_type)
    return (
        value.startswith("text/")
        or value in {"application/json", "application/javascript", "application/xml"}
        or value.endswith("+xml")
        or value.endswith("+json")
    )
