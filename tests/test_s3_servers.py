"""What each S3 server of the suite does with the conditional writes streamproxy relies on.

These pin the servers, not the service. The service's promise (never replace a
file) needs `If-None-Match: *` honoured on PutObject: its start-up probe refuses
a server that ignores it there. Where CompleteMultipartUpload honours it too
(moto) large files are published with it; where it does not (RGW 16, Pacific,
Debian 12, replaces the object) the service claims the name first with a
conditional PutObject (storage/s3nameclaim.py; s3servers.CLAIMS). When a package
update changes what a server does, these tests say so.

A completion must name every uploaded part on RGW (InvalidPart otherwise), where S3 and
moto drop the parts left out; the resumable uploads' stray parts depend on which
(resumable/s3strays.py).
"""

from __future__ import annotations

import uuid

import pytest
from botocore.exceptions import ClientError

from streamproxy.storage import s3 as s3_module
from streamproxy.storage.s3 import S3Location, S3Storage

from .s3servers import CLAIMS
from .s3support import BUCKET, S3Server

pytestmark = pytest.mark.s3_only

# Does CompleteMultipartUpload with If-None-Match: * refuse an existing key? Where it
# does not, the service claims names first.
COMPLETE_HONOURS_IF_NONE_MATCH = {kind: not claims for kind, claims in CLAIMS.items()}


# Does CompleteMultipartUpload leave out an uploaded part the request does not name?
COMPLETE_LEAVES_OUT_UNNAMED_PARTS = {"moto": True, "rgw": False}


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


async def test_the_service_probes_which_way_to_publish(
    s3_server: S3Server, storage_kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Start-up's probe picks claims exactly where the completion ignores the condition."""
    monkeypatch.setattr(s3_module, "_VERIFIED", {})  # probe, not the answer this process has
    storage = S3Storage(S3Location(BUCKET, "probe/"), endpoint=s3_server.endpoint)
    await storage.start()
    try:
        assert storage.claims == CLAIMS[storage_kind]
    finally:
        await storage.close()


def test_complete_multipart_upload_leaving_out_an_uploaded_part(
    s3_server: S3Server, storage_kind: str
) -> None:
    client = s3_server.client
    key = f"strays/{uuid.uuid4().hex}"
    upload = client.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    etags = [
        client.upload_part(
            Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=number, Body=bytes([number]) * size
        )["ETag"]
        for number, size in ((1, 5 * 1024 * 1024), (2, 5 * 1024 * 1024), (3, 10))
    ]
    try:
        client.complete_multipart_upload(
            Bucket=BUCKET,
            Key=key,
            UploadId=upload,
            MultipartUpload={
                "Parts": [{"PartNumber": 1, "ETag": etags[0]}, {"PartNumber": 3, "ETag": etags[2]}]
            },
        )
    except ClientError as error:
        assert not COMPLETE_LEAVES_OUT_UNNAMED_PARTS[storage_kind], error
        assert error.response["Error"]["Code"] == "InvalidPart"
        client.abort_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload)
        return
    assert COMPLETE_LEAVES_OUT_UNNAMED_PARTS[storage_kind]
    assert _body(s3_server, key) == b"\x01" * 5 * 1024 * 1024 + b"\x03" * 10
