"""What each S3 server of the suite does with the conditional writes streamproxy relies on.

These pin the servers, not the service: the service's promise (never replace a
file) holds only where the server honours `If-None-Match: *`, and its start-up
check refuses a server that does not. RGW 16 (Pacific, Debian 12) honours it on
PutObject and ignores it on CompleteMultipartUpload, replacing the object; when
a package update changes that, this test says so.
"""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

from .s3support import BUCKET, S3Server

pytestmark = pytest.mark.s3_only

# Does CompleteMultipartUpload with If-None-Match: * refuse an existing key?
COMPLETE_HONOURS_IF_NONE_MATCH = {"moto": True, "rgw": False}


def _existing_key(s3_server: S3Server) -> str:
    key = f"conditions/{uuid.uuid4().hex}"
    s3_server.client.put_object(Bucket=BUCKET, Key=key, Body=b"first")
    return key


def _body(s3_server: S3Server, key: str) -> bytes:
    return s3_server.client.get_object(Bucket=BUCKET, Key=key)["Body"].read()


def test_put_object_if_none_match_refuses_an_existing_key(s3_server: S3Server) -> None:
    key = _existing_key(s3_server)
    with pytest.raises(ClientError) as refused:
        s3_server.client.put_object(Bucket=BUCKET, Key=key, Body=b"second", IfNoneMatch="*")
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    assert refused.value.response["Error"]["Code"] == "PreconditionFailed"
    assert _body(s3_server, key) == b"first"


def test_complete_multipart_upload_if_none_match(s3_server: S3Server, storage_kind: str) -> None:
    client = s3_server.client
    key = _existing_key(s3_server)
    upload = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    part = client.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=1, Body=b"x")
    try:
        client.complete_multipart_upload(
            Bucket=BUCKET,
            Key=key,
            UploadId=upload,
            MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["ETag"]}]},
            IfNoneMatch="*",
        )
        status = 200
    except ClientError as error:
        status = error.response["ResponseMetadata"]["HTTPStatusCode"]
        client.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload)
    if COMPLETE_HONOURS_IF_NONE_MATCH[storage_kind]:
        assert (status, _body(s3_server, key)) == (412, b"first")
    else:  # the condition is ignored: the upload replaced the object
        assert (status, _body(s3_server, key)) == (200, b"x")
