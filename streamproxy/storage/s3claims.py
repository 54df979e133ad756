"""One-time claims in a bucket: `PREFIX/.claims/KEY`, put with `If-None-Match: *`.

S3 (and the servers that start-up found honouring conditional writes) lets only
the first such PutObject of a key succeed; every later one gets 412, whichever
instance sends it. So one claim holds across every instance on the bucket.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from .base import CLAIM_KEY_RE, CLAIMS_DIR
from .s3meta import S3_ERRORS, is_missing, is_taken, storage_error

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client


def claim_key(prefix: str, key: str) -> str:
    if not CLAIM_KEY_RE.match(key):
        raise ValueError(f"not a claim key: {key!r}")
    return f"{prefix}{CLAIMS_DIR}/{key}"


async def claim(client: S3Client, bucket: str, prefix: str, key: str, record: bytes) -> bool:
    try:
        await client.put_object(
            Bucket=bucket, Key=claim_key(prefix, key), Body=record, IfNoneMatch="*"
        )
    except S3_ERRORS as error:
        if is_taken(error):
            return False
        raise storage_error(error, "recording a one-time claim") from error
    return True


async def is_claimed(client: S3Client, bucket: str, prefix: str, key: str) -> bool:
    try:
        await client.head_object(Bucket=bucket, Key=claim_key(prefix, key))
    except S3_ERRORS as error:
        if is_missing(error):
            return False
        raise storage_error(error, "looking up a one-time claim") from error
    return True


async def forget_before(client: S3Client, bucket: str, prefix: str, cutoff: datetime) -> int:
    """Delete claim objects written before `cutoff`."""
    spent = []
    try:
        async for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=bucket, Prefix=f"{prefix}{CLAIMS_DIR}/"
        ):
            spent += [
                item["Key"] for item in page.get("Contents", []) if item["LastModified"] < cutoff
            ]
        for key in spent:
            await client.delete_object(Bucket=bucket, Key=key)
    except S3_ERRORS as error:
        raise storage_error(error, "removing spent claims") from error
    return len(spent)


async def release(client: S3Client, bucket: str, prefix: str, key: str) -> None:
    try:
        await client.delete_object(Bucket=bucket, Key=claim_key(prefix, key))
    except S3_ERRORS as error:
        raise storage_error(error, "releasing a one-time claim") from error
