"""The headers of tus 1.0.0 and the resumable upload draft: parsed and written, pure.

Strict where the protocols say "MUST" (a bad tus header is 400 before anything is
stored); where the draft says "other values MUST cause the entire header field to be
ignored" (its Structured Field headers), the parser returns None and the route treats the
field as absent, which for a required field is again 400.

Versions: tus 1.0.0 by `Tus-Resumable`; the draft by `Upload-Draft-Interop-Version`, 6
(draft -05: what tus-js-client's `ietf-draft-05` and iOS 18 send) or 8 (drafts -09 to
-11). Both use `Upload-Complete` (?1/?0) and append with `application/partial-upload`;
7 and anything else is refused (412), as the draft asks servers not to guess.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

from .problems import (
    COMPLETED_UPLOAD,
    INCONSISTENT_LENGTH,
    MISMATCHING_OFFSET,
    BadHeader,
    ChecksumMismatch,
    ResumableError,
    UnsupportedVersion,
)
from .state import Protocol, is_valid_id

TUS_VERSION: Final = "1.0.0"
TUS_PATCH_TYPE: Final = "application/offset+octet-stream"
DRAFT_PATCH_TYPE: Final = "application/partial-upload"
CHECKSUM_ALGORITHMS: Final = ("md5", "sha1", "sha256")
"""What `Tus-Checksum-Algorithm` advertises; sha1 is the one tus requires."""

_DIGEST_SIZES: Final = {"md5": 16, "sha1": 20, "sha256": 32}
_INTEROP: Final = {"6": Protocol.DRAFT_6, "8": Protocol.DRAFT_8}
_UINT = re.compile(r"[0-9]{1,15}")
"""Digits only (no sign, space or '+'); 15 digits is the Structured Field integer's limit."""
_SF_PARAMS = re.compile(r"(?:;[a-z*][a-z0-9_.*-]*(?:=[^;]*)?)*")
_METADATA_KEY = re.compile(r"[\x21-\x2b\x2d-\x7e]+")
"""Printable ASCII without space and comma."""


def detect_protocol(tus_resumable: str | None, interop_version: str | None) -> Protocol:
    """Which protocol a request speaks; 412 `unsupported_version` for none we speak.

    The draft's header wins when both are present: it is the more specific claim, and a
    draft client never sends `Tus-Resumable` by accident.
    """
    if interop_version is not None:
        protocol = _INTEROP.get(interop_version.strip())
        if protocol is None:
            raise UnsupportedVersion(
                f"draft interop version {interop_version!r} is not supported (6 or 8)"
            )
        return protocol
    if tus_resumable is not None and tus_resumable.strip() == TUS_VERSION:
        return Protocol.TUS
    said = "none" if tus_resumable is None else repr(tus_resumable)
    raise UnsupportedVersion(
        f"Tus-Resumable {said}: this server speaks tus {TUS_VERSION} and the draft's "
        "interop versions 6 and 8"
    )


def interop_version_value(protocol: Protocol) -> str | None:
    """`Upload-Draft-Interop-Version` to send back (the 104 must carry it)."""
    return {Protocol.DRAFT_6: "6", Protocol.DRAFT_8: "8"}.get(protocol)


def parse_uint(value: str, name: str) -> int:
    """tus `Upload-Offset`/`Upload-Length`: a non-negative integer, or 400."""
    if _UINT.fullmatch(value) is None:
        raise BadHeader(f"{name} must be a non-negative integer, not {value!r}")
    return int(value)


def parse_sf_integer(value: str | None) -> int | None:
    """Draft `Upload-Offset`/`Upload-Length` (SF Integer, non-negative); None if invalid."""
    if value is None:
        return None
    item, semicolon, params = value.strip().partition(";")
    if _UINT.fullmatch(item) is None:
        return None
    if semicolon and _SF_PARAMS.fullmatch(semicolon + params) is None:
        return None
    return int(item)


def parse_upload_complete(value: str | None) -> bool | None:
    """Draft `Upload-Complete` (SF Boolean): ?1 True, ?0 False, anything else ignored."""
    if value is None:
        return None
    item = value.strip().partition(";")[0]
    return {"?1": True, "?0": False}.get(item)


def format_bool(value: bool) -> str:
    return "?1" if value else "?0"


def parse_defer_length(value: str | None) -> bool:
    """tus `Upload-Defer-Length`: absent, or exactly 1 (anything else is 400)."""
    if value is None:
        return False
    if value.strip() != "1":
        raise BadHeader(f"Upload-Defer-Length must be 1, not {value!r}")
    return True


def parse_metadata(value: str | None) -> dict[str, str]:
    """tus `Upload-Metadata`: `key base64,key2 base64,flag` to {key: text}.

    Values must be UTF-8 text: every key streamproxy reads (filename, conversationId,
    filetype, channel) is text, and refusing the rest keeps binary out of names and logs.
    """
    result: dict[str, str] = {}
    if value is None or not value.strip():
        return result
    for pair in value.split(","):
        key, _, encoded = pair.strip().partition(" ")
        if _METADATA_KEY.fullmatch(key) is None:
            raise BadHeader(f"Upload-Metadata key {key!r} is empty or not printable ASCII")
        if key in result:
            raise BadHeader(f"Upload-Metadata key {key!r} appears twice")
        try:
            raw = base64.b64decode(encoded.strip(), validate=True)
            result[key] = raw.decode("utf-8")
        except (binascii.Error, ValueError) as error:
            raise BadHeader(f"Upload-Metadata {key!r} is not base64 of UTF-8 text") from error
    return result


def format_metadata(metadata: Mapping[str, str]) -> str:
    """The inverse, for tus `HEAD` responses (an empty value is the key alone)."""
    return ",".join(
        f"{key} {base64.b64encode(text.encode()).decode()}" if text else key
        for key, text in metadata.items()
    )


@dataclass(frozen=True)
class Checksum:
    """tus `Upload-Checksum`: the algorithm and the digest the client claims for its chunk."""

    algorithm: str
    digest: bytes

    def new_hash(self) -> Any:
        return hashlib.new(self.algorithm, usedforsecurity=False)

    def verify(self, computed: bytes) -> None:
        """460 when the chunk's digest differs: the routes then discard the chunk."""
        if computed != self.digest:
            raise ChecksumMismatch(
                f"the chunk's {self.algorithm} is not the one in Upload-Checksum; "
                "it was discarded, send it again"
            )


def parse_checksum(value: str | None) -> Checksum | None:
    """`md5|sha1|sha256 <base64>`; an unknown algorithm or a malformed digest is 400."""
    if value is None:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    size = _DIGEST_SIZES.get(algorithm)
    if size is None:
        supported = ",".join(CHECKSUM_ALGORITHMS)
        raise BadHeader(f"checksum algorithm {algorithm!r} is not supported ({supported})")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except binascii.Error as error:
        raise BadHeader("Upload-Checksum's digest is not base64") from error
    if len(digest) != size:
        raise BadHeader(f"a {algorithm} digest has {size} bytes, not {len(digest)}")
    return Checksum(algorithm, digest)


@dataclass(frozen=True)
class Concat:
    """tus `Upload-Concat`: a partial upload, or a final one naming its parts' URLs."""

    partial: bool
    urls: tuple[str, ...] = ()


def parse_concat(value: str | None) -> Concat | None:
    if value is None:
        return None
    value = value.strip()
    if value == "partial":
        return Concat(partial=True)
    kind, semicolon, rest = value.partition(";")
    urls = tuple(rest.split())
    if kind.strip() != "final" or not semicolon or not urls:
        raise BadHeader(f"Upload-Concat must be 'partial' or 'final;URL ...', not {value!r}")
    return Concat(partial=False, urls=urls)


def part_id(url: str, uploads_path: str) -> str:
    """The upload id in a final concatenation's part URL (absolute or relative).

    Only the path counts (behind a proxy the host a client sees is not ours to check):
    it must be `<uploads_path>/<id>`; anything else is a foreign upload, 400.
    """
    path = urlsplit(url).path
    prefix = uploads_path.rstrip("/") + "/"
    upload_id = path[len(prefix) :] if path.startswith(prefix) else ""
    if not is_valid_id(upload_id):
        raise BadHeader(f"{url!r} is not an upload of this server")
    return upload_id


def format_concat(partial: bool, urls: tuple[str, ...] = ()) -> str:
    return "partial" if partial else "final;" + " ".join(urls)


def format_upload_limit(max_size: int, max_age: int | None = None) -> str:
    """Draft `Upload-Limit` (SF Dictionary): `max-size=N[, max-age=S]`."""
    limit = f"max-size={max_size}"
    return limit if max_age is None else f"{limit}, max-age={max(0, max_age)}"


def format_expires(when: float) -> str:
    """tus `Upload-Expires`: an RFC 9110 date (IMF-fixdate)."""
    return email.utils.formatdate(when, usegmt=True)


def format_extensions(
    *, checksum_trailer: bool, concatenation: bool = True, unfinished: bool = True
) -> str:
    """`Tus-Extension`: exactly what the routes implement."""
    extensions = [
        "creation",
        "creation-with-upload",
        "creation-defer-length",
        "expiration",
        "checksum",
        *(["checksum-trailer"] if checksum_trailer else []),
        "termination",
        *(["concatenation"] if concatenation else []),
        *(["concatenation-unfinished"] if concatenation and unfinished else []),
    ]
    return ",".join(extensions)


_PROBLEM_TITLES: Final = {
    MISMATCHING_OFFSET: "offset from request does not match offset of resource",
    INCONSISTENT_LENGTH: "inconsistent length values for upload",
    COMPLETED_UPLOAD: "upload is already completed",
}
_PROBLEMS_BY_VERSION: Final = {
    Protocol.DRAFT_6: {MISMATCHING_OFFSET, COMPLETED_UPLOAD},
    Protocol.DRAFT_8: {MISMATCHING_OFFSET, INCONSISTENT_LENGTH},
}


def problem_fields(error: ResumableError, protocol: Protocol) -> dict[str, Any]:
    """RFC 9457 members to merge into the JSON error, for the problem types the client's
    draft version defines (empty for tus and for refusals without a problem type).

    The body keeps API.md's `message`/`error`/`detail`: a problem document may carry
    extension members, so one body serves both; the routes then send it as
    `application/problem+json`.
    """
    problem = error.problem
    if problem is None or problem not in _PROBLEMS_BY_VERSION.get(protocol, set()):
        return {}
    return {"type": problem, "title": _PROBLEM_TITLES[problem], **error.members}
