"""S3 for the tests: moto's standalone server in a subprocess, and a way to see into the bucket.

moto's server speaks the real S3 protocol over HTTP, so streamproxy talks to it
exactly as it would to AWS or MinIO. It keeps objects in its own memory and is
started once per test session on a free loopback port; each service gets its
own prefix in the one bucket.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

BUCKET = "streamproxy-test"
STAGING = ".tmp/"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


async def until(check: Callable[[], bool], within: float = 30.0) -> None:
    """Poll a blocking check (boto3 against moto) off the event loop the services run on."""
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(check):
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.1)


def loopback_client(endpoint: str) -> S3Client:
    """A boto3 client for an S3 server the tests run on loopback, with the fake keys."""
    import boto3
    from botocore.config import Config

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=FAKE_AWS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=FAKE_AWS["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}),
    )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class S3Server(Protocol):
    """What the tests use of a running S3 server: moto's here, Ceph's RGW in rgw.py."""

    @property
    def port(self) -> int: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def client(self) -> S3Client: ...


# moto's server, its conditional writes made atomic. moto answers requests on threads
# and decides `If-None-Match: *` by looking for the key, then writing: two racing
# writes of one name can both pass the look and the later one replaces the earlier
# (test_s3_claims.py's race did, once uploads arrived fast enough). S3 and RGW decide
# a conditional write atomically; one lock over moto's two conditional writes
# (PutObject, and CompleteMultipartUpload among its POSTs) does the same.
MOTO_MAIN = """
import threading

from moto.s3.responses import S3Response

_writes = threading.Lock()


def _atomic(method):
    def locked(self, *args, **kwargs):
        with _writes:
            return method(self, *args, **kwargs)

    return locked


S3Response.put_object = _atomic(S3Response.put_object)
S3Response._key_response_post = _atomic(S3Response._key_response_post)

from moto.server import main

main()
"""


@dataclass
class MotoServer:
    """A running moto server with the test bucket in it."""

    port: int
    process: subprocess.Popen[bytes]
    _client: Any = field(default=None, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def client(self) -> S3Client:
        if self._client is None:
            self._client = loopback_client(self.endpoint)
        return self._client  # type: ignore[no-any-return]

    @classmethod
    @contextlib.contextmanager
    def running(cls, log_path: Path) -> Iterator[MotoServer]:
        port = free_port()
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    MOTO_MAIN,
                    "-H",
                    "127.0.0.1",
                    "-p",
                    str(port),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        server = cls(port, process)
        try:
            server._wait_until_up()
            server.client.create_bucket(Bucket=BUCKET)
            yield server
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def _wait_until_up(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                urllib.request.urlopen(self.endpoint + "/", timeout=1).close()
                return
            except urllib.error.HTTPError:
                return  # it answers: that is all we wait for
            except (urllib.error.URLError, ConnectionError, OSError):
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto's server did not start") from None
                time.sleep(0.05)


@dataclass
class S3Store:
    """What one service's prefix holds: stored files, their metadata, and staging leftovers."""

    moto: S3Server  # moto's server or RGW (the field keeps its first name)
    prefix: str  # ends in "/"

    def _keys(self, prefix: str) -> list[str]:
        keys: list[str] = []
        for page in self.moto.client.get_paginator("list_objects_v2").paginate(
            Bucket=BUCKET, Prefix=prefix
        ):
            keys += [item["Key"] for item in page.get("Contents", [])]
        return keys

    def stored_names(self) -> set[str]:
        names = {key.removeprefix(self.prefix) for key in self._keys(self.prefix)}
        return {name for name in names if not name.startswith(".")}

    def meta_names(self) -> set[str]:
        """Stored objects that carry streamproxy's metadata."""
        client = self.moto.client
        return {
            name
            for name in self.stored_names()
            if "md5" in client.head_object(Bucket=BUCKET, Key=self.prefix + name)["Metadata"]
        }

    def multipart_uploads(self) -> list[str]:
        answer = self.moto.client.list_multipart_uploads(Bucket=BUCKET, Prefix=self.prefix)
        return [upload["Key"] for upload in answer.get("Uploads", [])]

    def temporaries(self) -> list[str]:
        """Staging objects and unfinished multipart uploads: both must be gone after a transfer."""
        staging = [key.removeprefix(self.prefix) for key in self._keys(self.prefix + STAGING)]
        uploads = [f"multipart upload of {key}" for key in self.multipart_uploads()]
        return sorted(staging + uploads)
