"""Completing a multipart upload that holds parts its record does not name (stray parts).

AWS S3 and moto complete a multipart upload from the parts the request names and drop
the others. Ceph's RGW 16 answers InvalidPart instead, as soon as one uploaded part is
left out (tests/test_s3_servers.py pins it). Stray parts are what a request uploaded and
never acknowledged: its process was killed mid-request (the next request reuses the
numbers it needs, not those past them), or it was fenced by a take-over (whose parts are
numbered past the older request's, never over them).

On such a server the upload is completed with every part it holds, into `<id>/data`;
then the byte ranges of the record's own parts in that object are copied server-side
into `<id>/whole`, which the commit publishes. The ranges are written into the record
(`assembled`) before the copy, so a completion cut short resumes with the copy (the
multipart upload is gone by then, and with it the parts' list).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from ..storage import s3copy
from ..storage.base import StorageError
from ..storage.s3meta import S3_ERRORS, storage_error

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client

Part = list[Any]
"""[number, etag, size], as the record keeps them (s3append.Part)."""


class UploadArea(Protocol):
    """What this needs of the uploads area (`s3store.UploadArea` is one)."""

    bucket: str

    @property
    def client(self) -> S3Client: ...


_MIN_PART = 5 * 1024**2  # S3's smallest part but the last


async def listed_parts(area: UploadArea, key: str, upload_id: str) -> list[Part]:
    """Every part the multipart upload holds, in ascending order."""
    parts: list[Part] = []
    try:
        async for page in area.client.get_paginator("list_parts").paginate(
            Bucket=area.bucket, Key=key, UploadId=upload_id
        ):
            parts += [[p["PartNumber"], p["ETag"], p["Size"]] for p in page.get("Parts", [])]
    except S3_ERRORS as error:
        raise storage_error(error, "listing the upload's parts") from error
    return sorted(parts, key=lambda part: int(part[0]))


async def fill_short_strays(
    area: UploadArea, key: str, upload_id: str, ours: list[Part]
) -> list[Part]:
    """Every part the upload holds, after overwriting each stray part but the last that
    is under S3's 5 MiB minimum (a tail sent by a completion that failed before it was
    recorded) with 5 MiB of zeros, which the copy leaves out: all but the last part must
    reach the minimum for the completion with every part to be taken."""
    listed = await listed_parts(area, key, upload_id)
    numbers = {int(part[0]) for part in ours}
    for part in listed[:-1]:
        if int(part[0]) not in numbers and int(part[2]) < _MIN_PART:
            try:
                answer = await area.client.upload_part(
                    Bucket=area.bucket, Key=key, UploadId=upload_id,
                    PartNumber=int(part[0]), Body=bytes(_MIN_PART),
                )  # fmt: skip
            except S3_ERRORS as error:
                raise storage_error(error, "filling a short stray part") from error
            part[1:] = [answer["ETag"], _MIN_PART]
    return listed


def kept_ranges(listed: list[Part], recorded: list[Part]) -> list[list[int]]:
    """[start, end) of each recorded part in the object of all `listed` parts, adjacent
    ones merged. A recorded part missing or changed (another ETag) is an error: the
    bytes acknowledged are not in S3 as acknowledged."""
    wanted = {int(number): str(etag) for number, etag, _ in recorded}
    ranges: list[list[int]] = []
    offset = 0
    for number, etag, size in listed:
        if int(number) in wanted:
            if wanted.pop(int(number)) != str(etag):
                raise StorageError(f"part {number} of the upload changed after it was recorded")
            if ranges and ranges[-1][1] == offset:
                ranges[-1][1] = offset + int(size)
            else:
                ranges.append([offset, offset + int(size)])
        offset += int(size)
    if wanted:
        raise StorageError(f"parts {sorted(wanted)} of the upload are missing from S3")
    return ranges


async def copy_ranges(area: UploadArea, source: str, target: str, ranges: list[list[int]]) -> None:
    """`target` made of `ranges` of `source`, copied server-side by one multipart upload
    (storage.s3copy). A copy cut short leaves its multipart upload under the upload's
    prefix: the next try makes a new one, and the upload's removal aborts them all."""
    client, bucket = area.client, area.bucket
    try:
        created = await client.create_multipart_upload(Bucket=bucket, Key=target)
        upload_id = created["UploadId"]
        copied = await s3copy.copy_ranges(client, bucket, source, target, upload_id, ranges)
        await client.complete_multipart_upload(
            Bucket=bucket, Key=target, UploadId=upload_id, MultipartUpload={"Parts": copied}
        )
    except S3_ERRORS as error:
        raise storage_error(error, "copying the upload's own parts") from error
