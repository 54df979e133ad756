"""What S3 keeps for a file, and what S3's refusals mean for the client.

A file's `FileInfo` travels as the object's user metadata (`x-amz-meta-*`). S3
carries those as HTTP headers, which must be ASCII, so free text (the original
name, the channel) is percent-encoded and decoded back. An object written by
something else (copied in by hand, or by Hybrid Chat's own MinIO) has none of
it and is described from its system metadata instead.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, unquote

import aiohttp
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from .base import (
    TIME_FORMAT,
    FileInfo,
    StorageError,
    StorageFull,
    StorageUnavailable,
    now_utc,
)

log = logging.getLogger("streamproxy.storage")

# Printable ASCII stays readable in the console; `%`, space and the rest are encoded.
_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) != "%")
_MD5_RE = re.compile(r"^[0-9a-f]{32}$")

# Codes with which S3, MinIO and Ceph refuse a write for size or quota: 507.
FULL_CODES = frozenset(
    {
        "EntityTooLarge",
        "QuotaExceeded",
        "InsufficientStorage",
        "StorageFull",
        "XMinioStorageFull",
        "XMinioAdminBucketQuotaExceeded",
    }
)
# The conditional write lost: the name is taken (412), or another writer is
# completing the same key at this moment (409); either way, try the next name.
TAKEN_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
MISSING_CODES = frozenset({"NoSuchKey", "NotFound", "404"})

# What a network-level failure looks like through aiobotocore.
TRANSPORT_ERRORS = (
    BotoConnectionError,
    HTTPClientError,
    aiohttp.ClientError,
    asyncio.TimeoutError,
    OSError,
)
# Everything an S3 call may raise that `storage_error` turns into a StorageError.
S3_ERRORS = (ClientError, BotoCoreError, aiohttp.ClientError, asyncio.TimeoutError, OSError)


def encode(info: FileInfo) -> dict[str, str]:
    """FileInfo as S3 user metadata (keys are lower case on the wire anyway)."""
    meta = {
        "md5": info.etag,
        "type": info.type,
        "size": str(info.size),
        "created": info.created.strftime(TIME_FORMAT),
    }
    for key, value in (
        ("conversation-id", info.conversation_id),
        ("channel", info.channel),
        ("original-name", info.original_name),
    ):
        if value is not None:
            meta[key] = quote(value, safe=_SAFE)
    return meta


def decode(head: Mapping[str, Any]) -> FileInfo:
    """FileInfo from a HeadObject or GetObject answer; our metadata wins, S3's fills gaps."""
    meta: Mapping[str, str] = head.get("Metadata") or {}
    size = int(head["ContentLength"])
    if "md5" not in meta:
        return _foreign(head, size)
    try:
        created = datetime.strptime(meta["created"], TIME_FORMAT).replace(tzinfo=UTC)
        declared = int(meta["size"])
    except (KeyError, ValueError) as error:
        raise StorageError(f"the object's metadata is unreadable: {error}") from error
    if declared != size:
        raise StorageError(f"the object is {size} bytes but its metadata says {declared}")
    return FileInfo(
        type=meta.get("type") or head.get("ContentType") or "application/octet-stream",
        size=size,
        etag=meta["md5"],
        created=created,
        conversation_id=_text(meta, "conversation-id"),
        channel=_text(meta, "channel"),
        original_name=_text(meta, "original-name"),
    )


def _text(meta: Mapping[str, str], key: str) -> str | None:
    value = meta.get(key)
    return None if value is None else unquote(value)


def _foreign(head: Mapping[str, Any], size: int) -> FileInfo:
    """An object put there by another program: S3's ETag is the MD5 for a single PUT."""
    etag = str(head.get("ETag", "")).strip('"')
    modified = head.get("LastModified")
    if isinstance(modified, datetime):
        created = modified.astimezone(UTC).replace(microsecond=0)
    else:
        created = now_utc()
    return FileInfo(
        type=head.get("ContentType") or "application/octet-stream",
        size=size,
        etag=etag if _MD5_RE.match(etag) else (etag or "0" * 32),
        created=created,
    )


def error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


def http_status(error: ClientError) -> int:
    return int(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))


def _answered(error: BaseException, codes: frozenset[str], status: int) -> bool:
    """Did S3 answer with one of these error codes, or with this HTTP status?"""
    return isinstance(error, ClientError) and (
        error_code(error) in codes or http_status(error) == status
    )


def is_taken(error: BaseException) -> bool:
    return _answered(error, TAKEN_CODES, 412)


def is_missing(error: BaseException) -> bool:
    return _answered(error, MISSING_CODES, 404)


def storage_error(error: BaseException, doing: str) -> StorageError:
    """The StorageError for a failed S3 call; the full reason goes to the log only."""
    log.warning("S3 failed while %s: %r", doing, error)
    if isinstance(error, ClientError):
        code = error_code(error)
        if code in FULL_CODES or http_status(error) == 507:
            return StorageFull(f"the bucket refused the file while {doing} ({code})")
        return StorageUnavailable(f"object storage answered {code or 'an error'} while {doing}")
    if not isinstance(error, TRANSPORT_ERRORS):
        return StorageError(f"S3 client failed ({type(error).__name__}) while {doing}")
    return StorageUnavailable(
        f"object storage is unreachable ({type(error).__name__}) while {doing}; try again shortly"
    )
