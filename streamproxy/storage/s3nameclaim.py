"""Claim first: never replacing a file where CompleteMultipartUpload ignores If-None-Match.

Ceph's RGW 16 honours `If-None-Match: *` on PutObject but completes a multipart
upload over an existing object whatever the condition says. On such a server a
large file takes its name in four steps (start-up's probe picks this way):

1. a claim record `PREFIX/.tmp/TIME-UUID-claim` whose metadata names the key, so
   that what a crash leaves is found by listing `.tmp/`, not the whole prefix;
2. the claim: an empty PutObject on the name with `If-None-Match: *` and the
   metadata `streamproxy-claim=UUID`; a 412 means the name is taken;
3. the server-side copy into a multipart upload on the name, completed without
   a condition: every other writer (small files, other claims) goes through the
   honoured conditional PutObject, so the completion can only replace our claim;
4. the record is deleted.

Readers treat an object carrying `streamproxy-claim` as missing, so nothing
partial is ever visible. A claim is removed (by its writer on failure, by the
stale sweep after a crash) only while the name still carries its UUID. RGW has
no conditional DELETE, so that check and the delete are two steps: a writer
never completes a claim older than half of `--stale-after`, nor removes one
older than three quarters of it, and the sweep only takes claims older than
all of it, so they never race (every instance on a bucket needs the same
`--stale-after`).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

from botocore.exceptions import ClientError

from .s3meta import S3_ERRORS, http_status, is_missing, is_taken, storage_error

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

log = logging.getLogger("streamproxy.storage")

CLAIM = "streamproxy-claim"  # on the claimed name: the claim's UUID
CLAIMED_KEY = "streamproxy-claimed-key"  # on the record: the claimed key, percent-encoded
RECORD_SUFFIX = "-claim"
# Fractions of --stale-after: a claim is published within the first, released by its
# writer within the second; the sweep takes it only past all of it.
PUBLISH_WITHIN = 0.5
RELEASE_WITHIN = 0.75


def is_claim(head: Mapping[str, Any]) -> bool:
    """Is this HeadObject answer a claim (a name being published), not a file?"""
    return CLAIM in (head.get("Metadata") or {})


def is_record(key: str) -> bool:
    return key.endswith(RECORD_SUFFIX)


@dataclass(frozen=True)
class Claim:
    """One claim on one key, and its record."""

    key: str
    uuid: str
    record: str
    since: float  # when it was made (its record's key carries the second, for the sweep)

    @classmethod
    def new(cls, staging_prefix: str, key: str) -> Claim:
        since, token = time.time(), uuid.uuid4().hex
        return cls(key, token, f"{staging_prefix}{int(since)}-{token}{RECORD_SUFFIX}", since)

    def too_old(self, stale_after: float) -> bool:
        """Past half of --stale-after the sweep draws near: never publish then."""
        return time.time() - self.since > stale_after * PUBLISH_WITHIN

    def release_by(self, stale_after: float) -> float:
        """The time after which only the sweep may remove the claim."""
        return self.since + stale_after * RELEASE_WITHIN


async def take(client: S3Client, bucket: str, claim: Claim) -> bool:
    """Record the claim, then claim the name: True if it is ours, False if taken. On
    False or an error the caller releases the claim (the janitor's `Leftover`)."""
    try:
        await client.put_object(
            Bucket=bucket,
            Key=claim.record,
            Body=b"",
            Metadata={CLAIMED_KEY: quote(claim.key, safe="/")},
        )
    except S3_ERRORS as error:
        raise storage_error(error, "recording a claim") from error
    try:
        await client.put_object(
            Bucket=bucket, Key=claim.key, Body=b"", IfNoneMatch="*", Metadata={CLAIM: claim.uuid}
        )
        return True
    except S3_ERRORS as error:
        if isinstance(error, ClientError) and not is_taken(error) and http_status(error) < 500:
            raise storage_error(error, "claiming a name") from error
        # A retry of a claim whose answer was lost finds the name taken: by us?
        try:
            if await holds(client, bucket, claim):
                return True
        except S3_ERRORS:
            pass
        if is_taken(error):
            return False
        raise storage_error(error, "claiming a name") from error


async def holds(client: S3Client, bucket: str, claim: Claim) -> bool:
    """Does the name still carry this claim?"""
    try:
        head = await client.head_object(Bucket=bucket, Key=claim.key)
    except ClientError as error:
        if is_missing(error):
            return False
        raise
    return (head.get("Metadata") or {}).get(CLAIM) == claim.uuid


async def release(client: S3Client, bucket: str, claim: Claim) -> None:
    """Delete the name if it still carries this claim, then the record (in that order:
    the record is how a crash in between is found). Raises S3's errors."""
    if await holds(client, bucket, claim):
        await client.delete_object(Bucket=bucket, Key=claim.key)
    try:
        await client.delete_object(Bucket=bucket, Key=claim.record)
    except ClientError as error:
        if not is_missing(error):
            raise


async def recorded(client: S3Client, bucket: str, record: str) -> Claim | None:
    """The claim a record (found by the stale sweep) stands for; None if the record is
    gone, or unreadable (then only the record can be deleted)."""
    try:
        head = await client.head_object(Bucket=bucket, Key=record)
    except ClientError as error:
        if is_missing(error):
            return None
        raise
    key = (head.get("Metadata") or {}).get(CLAIMED_KEY)
    stamp, _, rest = record.rpartition("/")[2].partition("-")
    token = rest.removesuffix(RECORD_SUFFIX)
    if key is None or not stamp.isdigit() or not token:
        log.warning("the claim record %s names no key", record)
        return None
    return Claim(unquote(key), token, record, float(stamp))
