"""Stored names: `{conversationId}_{safe name}`, unique, and never a path.

A client's file name is a hint that ends up in a file system path and in URLs,
so it is checked strictly: anything that looks like a path or hides characters is
refused with a clear reason rather than silently rewritten, while merely awkward
characters are replaced. Stored names are limited to 200 bytes of UTF-8 so the
name plus our sidecar suffixes fits every common file system's 255-byte limit.
"""

from __future__ import annotations

import random
import re
import secrets
import unicodedata
from collections.abc import Iterator

from .mediatypes import extension_for_type

MAX_CLIENT_NAME_BYTES = 255
MAX_STORED_NAME_BYTES = 200
MAX_CONVERSATION_ID = 128
SUFFIX_ATTEMPTS = 32

_CONVERSATION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")
# Legal on Linux but trouble on other systems, in shells or in Content-Disposition.
_AWKWARD = re.compile(r'[<>:"|?*\s]+')


class BadName(ValueError):
    """A name a client gave cannot be used; the message says why, for the response."""


# Exactly Unicode's control characters (Cc) and lone surrogates (Cs): one regular
# expression scan instead of a category lookup per character.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def check_conversation_id(value: str) -> str:
    if not value:
        raise BadName("conversationId is empty")
    if len(value) > MAX_CONVERSATION_ID:
        raise BadName(f"conversationId is longer than {MAX_CONVERSATION_ID} characters")
    if not _CONVERSATION_ID_RE.match(value):
        raise BadName(
            "conversationId may contain only letters, digits and . _ : @ - "
            "and must start with a letter or digit"
        )
    return value


def clean_client_name(filename: str) -> str:
    """Check a client's file name and return a safe version of it (may be `""`).

    Refused: path separators, `.` and `..`, control characters, more than 255 bytes.
    Replaced: invisible format characters (such as right-to-left overrides) are
    dropped; characters other systems reject and runs of white space become `_`.
    """
    if len(filename.encode("utf-8", "surrogatepass")) > MAX_CLIENT_NAME_BYTES:
        raise BadName(
            f"file name is {len(filename)} characters long; "
            f"at most {MAX_CLIENT_NAME_BYTES} bytes are accepted"
        )
    if "/" in filename or "\\" in filename:
        raise BadName("file name must be a plain name, not a path (it contains / or \\)")
    if _CONTROL.search(filename):
        raise BadName("file name contains control characters")
    ascii_only = filename.isascii()  # then NFC changes nothing and no character is Cf
    name = filename if ascii_only else unicodedata.normalize("NFC", filename)
    if name.strip() in {".", ".."}:
        raise BadName("file name cannot be . or ..")
    if not ascii_only:
        name = "".join(ch for ch in name if unicodedata.category(ch) != "Cf")
    name = _AWKWARD.sub("_", name.strip())
    return name.lstrip(".").rstrip(". ")


def _fit(stem: str, extension: str, limit: int) -> str:
    """Cut the stem (never the extension) so the whole name fits `limit` UTF-8 bytes."""
    budget = limit - len(extension.encode())
    encoded = stem.encode()
    if len(encoded) > budget:
        stem = encoded[:budget].decode("utf-8", "ignore")
    return stem + extension


def _split(name: str) -> tuple[str, str]:
    dot = name.rfind(".")
    if dot <= 0 or len(name) - dot > 16:
        return name, ""
    return name[:dot], name[dot:]


def base_name(conversation_id: str | None, clean_name: str, media_type: str) -> str:
    """`{conversationId}_{name}`, with `file.<ext>` standing in for a missing name."""
    name = clean_name or "file" + extension_for_type(media_type)
    if conversation_id:
        name = f"{conversation_id}_{name}"
    stem, extension = _split(name)
    return _fit(stem, extension, MAX_STORED_NAME_BYTES)


# Suffixes need to be unlikely to collide, not unpredictable (names are public in
# URLs), so a seeded generator does, without a system call per name.
_SUFFIXES = random.Random(secrets.randbits(64))


def candidates(base: str) -> Iterator[str]:
    """The base name, then the base with a short random suffix before the extension.

    Lazy: the suffixed names are only made when the storage finds the name taken.
    """
    yield base
    stem, extension = _split(base)
    for _ in range(SUFFIX_ATTEMPTS):
        suffix = f"-{_SUFFIXES.getrandbits(24):06x}"
        yield _fit(stem, suffix + extension, MAX_STORED_NAME_BYTES)


def check_stored_name(name: str | None) -> str:
    """Validate a name from a download or stat request; it must name a file, never a path."""
    if not name:
        raise BadName("the filename parameter is required")
    if len(name.encode("utf-8", "surrogatepass")) > MAX_STORED_NAME_BYTES:
        raise BadName(f"filename is longer than {MAX_STORED_NAME_BYTES} bytes")
    if "/" in name or "\\" in name or name.startswith(".") or _CONTROL.search(name):
        raise BadName(
            "filename must be a stored file name: no path separators, control "
            "characters or leading dot"
        )
    return unicodedata.normalize("NFC", name)
