"""Start-up's probe: does this server honour `If-None-Match: *` where uploads need it?

On PutObject it must (else nothing stops an upload replacing a file: start-up
fails). On CompleteMultipartUpload it may not (RGW 16): then large files claim
their name first (`s3nameclaim`). The probe writes under the staging prefix only.
"""

from __future__ import annotations

from contextlib import suppress

from botocore.exceptions import ClientError

from .base import StorageError
from .s3cleanup import Leftover, staging_key
from .s3meta import S3_ERRORS, http_status
from .s3upload import Bucket


async def needs_claims(storage: Bucket, where: str) -> bool:
    """Whether large files need claims at `where`; raises StorageError if even
    PutObject ignores the condition."""
    client, bucket = storage.client, storage.bucket
    key = staging_key(storage.staging_prefix)
    try:
        await client.put_object(Bucket=bucket, Key=key, Body=b"", IfNoneMatch="*")
        try:
            await client.put_object(Bucket=bucket, Key=key, Body=b"", IfNoneMatch="*")
            ignored = "PutObject"
        except ClientError as error:
            if http_status(error) != 412:
                raise
            ignored = await _probe_multipart(storage, key)
    except S3_ERRORS as error:
        raise StorageError(f"cannot write to bucket {bucket!r}: {error}") from None
    finally:
        with suppress(*S3_ERRORS):
            await client.delete_object(Bucket=bucket, Key=key)
    if ignored == "PutObject":
        raise StorageError(
            f"the server at {where} ignores If-None-Match on PutObject; "
            "streamproxy needs conditional writes to never replace a file"
        )
    return bool(ignored)


async def _probe_multipart(storage: Bucket, key: str) -> str:
    """`CompleteMultipartUpload` if it completed over the existing `key`, else empty."""
    client, bucket = storage.client, storage.bucket
    upload_id = await storage.create_upload(key)
    try:
        part = await client.upload_part(
            Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=1, Body=b"x"
        )
        await client.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
            IfNoneMatch="*",
        )
    except ClientError as error:
        if http_status(error) != 412:
            raise
        return ""
    finally:
        await storage.janitor.discard(Leftover(key, upload_id))
    return "CompleteMultipartUpload"
