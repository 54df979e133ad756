"""Which S3 servers the suite runs on, and their fixtures.

STREAMPROXY_TEST_S3 picks them: unset or `all` runs moto's server and Ceph's
RGW, `moto` or `rgw` only that one. Naming `rgw` is a demand: a test on RGW
that would skip fails instead (capabilities.py).

moto honours `If-None-Match: *` on CompleteMultipartUpload, so the service
publishes large files with it there; RGW 16 ignores it there, so the service
claims the name first (storage/s3nameclaim.py). `CLAIMS` says which way each takes
(test_s3_servers.py pins the servers' behaviour behind it).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from .capabilities import require_program
from .rgw import RgwServer
from .s3support import FAKE_AWS, MotoServer, S3Server

S3_SERVERS = ("moto", "rgw")
# Does the service publish large files by claiming their name first on this server?
CLAIMS = {"moto": False, "rgw": True}


def s3_kinds() -> tuple[str, ...]:
    chosen = os.environ.get("STREAMPROXY_TEST_S3", "").strip().lower()
    if chosen in S3_SERVERS:
        return (chosen,)
    if chosen not in ("", "all"):
        raise pytest.UsageError(f"STREAMPROXY_TEST_S3={chosen}: expected moto, rgw or all")
    return S3_SERVERS


@pytest.fixture(scope="session")
def fake_aws_credentials() -> Iterator[None]:
    """The keys every S3 server of the suite accepts, in our environment for the session."""
    pytest.importorskip("aiobotocore", reason="S3 tests need the s3 extra")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in FAKE_AWS.items():
            patch.setenv(name, value)
        yield


@pytest.fixture(scope="session")
def moto_server(
    tmp_path_factory: pytest.TempPathFactory, fake_aws_credentials: None
) -> Iterator[MotoServer]:
    """moto's S3 server for the whole session."""
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    with MotoServer.running(log_path) as server:
        yield server


@pytest.fixture(scope="session")
def rgw_server(fake_aws_credentials: None) -> Iterator[RgwServer]:
    """A one-node Ceph cluster with its RADOS Gateway for the whole session (~3 s to start)."""
    for program, package in RgwServer.PROGRAMS.items():
        require_program(program, package)
    with RgwServer.running() as server:
        yield server


@pytest.fixture
def s3_server(storage_kind: str, request: pytest.FixtureRequest) -> S3Server:
    """The S3 server of this run of a test: moto's or RGW (an `s3_only` test's parameter)."""
    if storage_kind == "local":
        raise AssertionError("s3_server is for S3 storage only: mark the test s3_only")
    server: S3Server = request.getfixturevalue(f"{storage_kind}_server")
    return server
