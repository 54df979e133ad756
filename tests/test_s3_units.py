"""The S3 pieces that need no server: metadata encoding, error mapping, sizes, URLs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from aiohttp.test_utils import make_mocked_request
from botocore.exceptions import ClientError, EndpointConnectionError

from streamproxy.errors import as_api_error
from streamproxy.runtime.settings import Settings, SettingsError, load_settings
from streamproxy.storage import open_storage
from streamproxy.storage.base import FileInfo, StorageError, StorageFull, StorageUnavailable
from streamproxy.storage.s3 import S3Location, S3Storage, effective_part_size
from streamproxy.storage.s3copy import COPY_PART, copy_pieces
from streamproxy.storage.s3meta import decode, encode, is_taken, storage_error

MiB = 1024 * 1024


def client_error(status: int, code: str) -> ClientError:
    response: Any = {
        "Error": {"Code": code, "Message": code},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    return ClientError(response, "PutObject")


def test_metadata_round_trip_keeps_any_text() -> None:
    info = FileInfo(
        type="image/jpeg",
        size=5,
        etag="0" * 32,
        created=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
        conversation_id="c-1",
        channel="whatsapp ✓",
        original_name="фото 100% «ok».jpg",
    )
    meta = encode(info)
    assert all(value.isascii() and value == value.strip() for value in meta.values())
    assert decode({"Metadata": meta, "ContentLength": 5, "ContentType": "x/y"}) == info


def test_size_mismatch_is_an_error_not_a_short_download() -> None:
    info = FileInfo(type="a/b", size=5, etag="0" * 32, created=datetime.now(UTC))
    with pytest.raises(StorageError, match="metadata says 5"):
        decode({"Metadata": encode(info), "ContentLength": 4})


def test_unreadable_metadata_is_a_storage_error() -> None:
    info = FileInfo(type="a/b", size=5, etag="0" * 32, created=datetime.now(UTC))
    meta = encode(info) | {"created": "yesterday"}
    with pytest.raises(StorageError, match="metadata is unreadable"):
        decode({"Metadata": meta, "ContentLength": 5})


def test_foreign_object_uses_s3_system_metadata() -> None:
    modified = datetime(2025, 5, 6, 7, 8, 9, 123, tzinfo=UTC)
    info = decode(
        {
            "ContentLength": 3,
            "ContentType": "image/png",
            "ETag": '"' + "a" * 32 + '"',
            "LastModified": modified,
        }
    )
    assert (info.type, info.size, info.etag) == ("image/png", 3, "a" * 32)
    assert info.created == modified.replace(microsecond=0)


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        (client_error(400, "EntityTooLarge"), StorageFull),
        (client_error(403, "QuotaExceeded"), StorageFull),
        (client_error(507, "XMinioStorageFull"), StorageFull),
        (client_error(503, "SlowDown"), StorageUnavailable),
        (client_error(500, "InternalError"), StorageUnavailable),
        (EndpointConnectionError(endpoint_url="http://s3.internal:9000"), StorageUnavailable),
    ],
)
def test_s3_errors_become_507_or_503(error: Exception, kind: type) -> None:
    mapped = storage_error(error, "saving the file")
    assert type(mapped) is kind
    api = as_api_error(make_mocked_request("POST", "/files"), mapped)
    assert api.status == (507 if kind is StorageFull else 503)
    assert "s3.internal" not in api.detail  # the endpoint stays in the log


def test_lost_conditional_writes_mean_next_name() -> None:
    assert is_taken(client_error(412, "PreconditionFailed"))
    assert is_taken(client_error(409, "ConditionalRequestConflict"))
    assert not is_taken(client_error(403, "AccessDenied"))


def test_part_size_grows_with_the_cap() -> None:
    assert effective_part_size(8 * MiB, 5 * MiB) == 8 * MiB
    assert effective_part_size(8 * MiB, 1024**3) == 8 * MiB
    grown = effective_part_size(8 * MiB, 200 * 1024**3)
    assert grown % MiB == 0 and grown * 10_000 >= 200 * 1024**3


@pytest.mark.parametrize(
    ("url", "bucket", "prefix"),
    [
        ("s3://media", "media", ""),
        ("s3://media/", "media", ""),
        ("s3://media/chat/files/", "media", "chat/files/"),
        ("s3://media/chat", "media", "chat/"),
    ],
)
def test_storage_url(url: str, bucket: str, prefix: str) -> None:
    assert S3Location.parse(url) == S3Location(bucket, prefix)


def test_bad_storage_urls() -> None:
    with pytest.raises(SettingsError):
        S3Location.parse("s3:///prefix")
    with pytest.raises(SettingsError, match="unsupported storage URL"):
        open_storage(Settings(storage="gs://bucket/x"))


def test_s3_settings_from_flags_and_environment() -> None:
    environ = {
        "STREAMPROXY_STORAGE": "s3://media/chat",
        "STREAMPROXY_S3_ENDPOINT": "http://minio:9000",
        "STREAMPROXY_S3_PART_SIZE": "16M",
        "STREAMPROXY_MAX_SIZE": "1G",
    }
    settings = load_settings(environ=environ)
    storage = open_storage(settings)
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix, storage.endpoint) == (
        "media",
        "chat/",
        settings.s3_endpoint,
    )
    assert storage.part_size == 16 * MiB
    with pytest.raises(SettingsError, match="between 5M and 4G"):
        load_settings(environ={"STREAMPROXY_S3_PART_SIZE": "1M"})
    with pytest.raises(SettingsError, match="endpoint"):
        load_settings(environ={"STREAMPROXY_S3_ENDPOINT": "minio:9000"})


def test_copy_pieces_split_each_range_evenly_within_copy_part() -> None:
    """Each range split into equal pieces of at most COPY_PART, covering it exactly: no
    piece but a range's last under half of COPY_PART (so never under S3's 5 MiB)."""
    ranges = [[0, 2 * COPY_PART + 1], [2 * COPY_PART + 10, 3 * COPY_PART + 10], [5, 5]]
    pieces = copy_pieces(ranges)
    assert pieces[:3] == [
        (0, 715827883 - 1),
        (715827883, 2 * 715827883 - 1),
        (2 * 715827883, 2 * COPY_PART),
    ]
    assert pieces[3:] == [(2 * COPY_PART + 10, 3 * COPY_PART + 9)]  # exactly one piece
    assert all(end - start + 1 <= COPY_PART for start, end in pieces)
