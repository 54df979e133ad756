"""Byte ranges of one S3 object copied server-side into a multipart upload (UploadPartCopy).

Two places build an object out of another one without a byte through us: a writer's
commit publishes its staged object on a name (`s3upload`: the whole object, one range),
and a resumable upload completed with stray parts keeps only its own parts' ranges
(`resumable.s3strays`). Both copy here, so both split, bound and fail the same way.

Each range is split evenly into pieces of at most `COPY_PART`: a piece copies in one
request, a few run at once, and no piece but a range's last falls under S3's 5 MiB
minimum part size (a range that is not the last is itself at least 5 MiB: recorded
parts are). The first failed copy cancels the others and is raised as botocore raised
it, for the caller to tell a taken name from an unavailable S3.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types_aiobotocore_s3.client import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

# 1 GiB per UploadPartCopy (S3 allows 5 GiB): a few at once spread a large copy.
COPY_PART = 1024**3
COPY_CONCURRENCY = 4


def copy_pieces(ranges: list[list[int]]) -> list[tuple[int, int]]:
    """The [start, end) ranges as UploadPartCopy pieces [start, end] (inclusive, as the
    Range header has them): each at most `COPY_PART`, a range split evenly."""
    pieces: list[tuple[int, int]] = []
    for start, end in ranges:
        if end <= start:
            continue
        count = -(-(end - start) // COPY_PART)
        step = -(-(end - start) // count)
        pieces += [(at, min(at + step, end) - 1) for at in range(start, end, step)]
    return pieces


async def copy_ranges(
    client: S3Client, bucket: str, source: str, target: str, upload_id: str, ranges: list[list[int]]
) -> list[CompletedPartTypeDef]:
    """Parts 1.. of the multipart upload `upload_id` on `target`, copied from `ranges`
    of `source`: the list its CompleteMultipartUpload takes, in order. The caller
    creates and completes the upload (its metadata and condition are its own) and
    aborts it if this raises."""
    gate = asyncio.Semaphore(COPY_CONCURRENCY)

    async def copy(number: int, start: int, end: int) -> CompletedPartTypeDef:
        async with gate:
            answer = await client.upload_part_copy(
                Bucket=bucket,
                Key=target,
                UploadId=upload_id,
                PartNumber=number,
                CopySource={"Bucket": bucket, "Key": source},
                CopySourceRange=f"bytes={start}-{end}",
            )
        return {"PartNumber": number, "ETag": answer["CopyPartResult"]["ETag"]}

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(copy(index + 1, start, end))
                for index, (start, end) in enumerate(copy_pieces(ranges))
            ]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None  # the others were cancelled because of it
    return [task.result() for task in tasks]
