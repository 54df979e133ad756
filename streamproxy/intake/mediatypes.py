"""Media types: normalising what clients declare, the allow/deny rules, and active content.

A declared type is only a hint: it is validated here before it is stored or sent
back in a `Content-Type` header, and types that a browser would run as active
content are recognised so downloads can defuse them.
"""

from __future__ import annotations

import functools
import mimetypes
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

OCTET_STREAM = "application/octet-stream"

# RFC 9110 token characters, for the type, subtype and parameter names.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_MEDIA_TYPE_RE = re.compile(rf"^\s*({_TOKEN})/({_TOKEN})\s*(;.*)?$")
_CHARSET_RE = re.compile(r";\s*charset\s*=\s*\"?([A-Za-z0-9._:-]{1,40})\"?", re.IGNORECASE)

# Deterministic extension table: Python's defaults plus what chat channels carry,
# never the host's /etc/mime.types (so every machine names types the same way).
_TABLE = mimetypes.MimeTypes()
for _type, _ext in (
    ("image/webp", ".webp"),
    ("image/heic", ".heic"),
    ("image/heif", ".heif"),
    ("image/avif", ".avif"),
    ("audio/ogg", ".ogg"),
    ("audio/ogg", ".oga"),
    ("audio/ogg", ".opus"),
    ("audio/mpeg", ".mpga"),
    ("audio/mp4", ".m4a"),
    ("audio/aac", ".aac"),
    ("audio/amr", ".amr"),
    ("video/3gpp", ".3gp"),
    ("video/webm", ".webm"),
    ("audio/webm", ".weba"),
    ("text/csv", ".csv"),
    ("application/vnd.openxmlformats-officedocument.wordprocessingml.document", ".docx"),
    ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", ".xlsx"),
    ("application/vnd.openxmlformats-officedocument.presentationml.presentation", ".pptx"),
    ("application/vnd.ms-powerpoint", ".ppt"),
    ("application/msword", ".doc"),
    ("application/vnd.ms-excel", ".xls"),
):
    _TABLE.add_type(_type, _ext, strict=True)

# Types a browser runs as script or renders as a document of this origin.
_ACTIVE_TYPES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "text/xml",
        "application/xml",
        "text/xsl",
        "application/xslt+xml",
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "text/ecmascript",
        "text/jscript",
        "multipart/x-mixed-replace",
        "text/cache-manifest",
        "application/wasm",
    }
)


def essence(media_type: str) -> str:
    """`type/subtype` in lower case, without parameters."""
    return media_type.split(";", 1)[0].strip().lower()


def normalize_media_type(declared: str | None) -> str | None:
    """Return a safe `type/subtype[; charset=x]` for a declared type, or None if unusable."""
    if not declared or len(declared) > 255:
        return None
    match = _MEDIA_TYPE_RE.match(declared)
    if not match:
        return None
    value = f"{match.group(1)}/{match.group(2)}".lower()
    charset = _CHARSET_RE.search(match.group(3) or "")
    if charset and value.startswith("text/"):
        value += f"; charset={charset.group(1).lower()}"
    return value


def is_active(media_type: str) -> bool:
    """True for types a browser would execute or render as a document that can run script."""
    value = essence(media_type)
    return value in _ACTIVE_TYPES or value.endswith("+xml")


def extension_of(filename: str) -> str:
    """The lower-case extension with its dot (`.pdf`), or `""`."""
    if "/" in filename:
        return PurePosixPath(filename).suffix.lower()
    # What PurePosixPath's suffix is for a name with no slash, without building a path.
    dot = filename.rfind(".")
    return filename[dot:].lower() if 0 < dot < len(filename) - 1 else ""


def type_from_extension(filename: str) -> str | None:
    return _type_of_extension(extension_of(filename))


@functools.lru_cache(maxsize=1024)
def _type_of_extension(extension: str) -> str | None:
    """Remembered: the table is complete once this module is imported, and every upload
    whose type is sniffed asks (`guess_type` parses its argument as a URL)."""
    guessed, _ = _TABLE.guess_type("x" + extension, strict=False)
    return guessed


def extension_for_type(media_type: str) -> str:
    """A conventional extension for a type (`.png`), or `""` when none is known."""
    ext = _TABLE.guess_extension(essence(media_type), strict=False)
    return ext or ""


def family(media_type: str) -> str:
    return essence(media_type).split("/", 1)[0]


@dataclass(frozen=True)
class TypeRule:
    """One `--allow-type` / `--deny-type` entry: exact type, family (`image/*`) or extension."""

    pattern: str

    @property
    def is_extension(self) -> bool:
        return self.pattern.startswith(".")

    def matches_type(self, media_type: str | None) -> bool:
        if media_type is None or self.is_extension:
            return False
        value = essence(media_type)
        if self.pattern.endswith("/*"):
            return value.split("/", 1)[0] == self.pattern[:-2]
        return value == self.pattern

    def matches_name(self, filename: str) -> bool:
        return self.is_extension and extension_of(filename) == self.pattern

    def __str__(self) -> str:
        return self.pattern


_EXTENSION_RULE_RE = re.compile(r"^\.[a-z0-9][a-z0-9._+-]{0,31}$")
_TYPE_RULE_RE = re.compile(rf"^{_TOKEN}/(\*|{_TOKEN})$")


def parse_type_rule(text: str) -> TypeRule:
    """Parse `image/png`, `image/*` or `.pdf` (a bare `pdf` is read as `.pdf`)."""
    pattern = text.strip().lower()
    if pattern and "/" not in pattern and not pattern.startswith("."):
        pattern = "." + pattern
    if _EXTENSION_RULE_RE.match(pattern) or _TYPE_RULE_RE.match(pattern):
        return TypeRule(pattern)
    raise ValueError(f"not a type rule: {text!r} (use image/png, image/*, or .pdf)")


@dataclass(frozen=True)
class TypePolicy:
    """The configured allow and deny lists, applied to each stored file.

    Allow: when the list is not empty, a file passes if any rule matches its stored
    type or its name's extension. Deny: a file is refused if any rule matches its
    stored type, the type sniffed from its bytes, or its extension, so declaring
    `image/png` for an executable does not get past `--deny-type application/*`.
    `also_allow` is a second allow list a file must pass as well (an upload link's).
    """

    allow: tuple[TypeRule, ...] = ()
    deny: tuple[TypeRule, ...] = ()
    also_allow: tuple[TypeRule, ...] = ()

    def refusal(self, filename: str, stored_type: str, sniffed_type: str | None) -> str | None:
        """Why this file is refused, in words for the client, or None when it may be stored."""
        for rule in self.deny:
            if rule.matches_name(filename):
                return f"files ending in {rule} are not accepted"
            if rule.matches_type(stored_type) or rule.matches_type(sniffed_type):
                matched = stored_type if rule.matches_type(stored_type) else sniffed_type
                return f"files of type {essence(matched or '')} are not accepted"
        for allow in (self.allow, self.also_allow):
            if allow and not any(
                rule.matches_name(filename) or rule.matches_type(stored_type) for rule in allow
            ):
                accepted = ", ".join(str(rule) for rule in allow)
                return f"type {essence(stored_type)} is not accepted; accepted: {accepted}"
        return None
