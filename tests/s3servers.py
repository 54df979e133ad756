"""Which S3 servers the suite runs on, their fixtures, and what a server is known to refuse.

STREAMPROXY_TEST_S3 picks them: unset or `all` runs moto's server and Ceph's
RGW, `moto` or `rgw` only that one. Naming `rgw` is a demand: a test on RGW
that would skip fails instead (capabilities.py), and so does a known refusal.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from streamproxy.storage.base import StorageError

from .capabilities import require_program, rgw_demanded
from .rgw import RgwServer
from .s3support import FAKE_AWS, MotoServer, S3Server

S3_SERVERS = ("moto", "rgw")

# RGW 16 (Pacific) honours If-None-Match on PutObject but ignores it on
# CompleteMultipartUpload, so the service refuses to start on it (its start-up
# check). Until the service has another way to never replace a file there, a
# test on RGW ends here as an expected failure (issue 15).
RGW_REFUSAL = "ignores If-None-Match on CompleteMultipartUpload"


def s3_kinds() -> tuple[str, ...]:
    chosen = os.environ.get("STREAMPROXY_TEST_S3", "").strip().lower()
    if chosen in S3_SERVERS:
        return (chosen,)
    if chosen not in ("", "all"):
        raise pytest.UsageError(f"STREAMPROXY_TEST_S3={chosen}: expected moto, rgw or all")
    return S3_SERVERS


# The refusal once seen in this session: later starts on RGW end at once rather
# than repeat the start-up check (0.5 s each, 2.5 minutes over the suite).
_seen_refusal: list[str] = []


@contextlib.contextmanager
def expected_refusal(storage_kind: str) -> Iterator[None]:
    """A service start on RGW refused for the known reason: an expected failure, unless demanded."""
    expected = storage_kind == "rgw" and not rgw_demanded()
    if expected and _seen_refusal:
        pytest.xfail(_seen_refusal[0])
    try:
        yield
    except StorageError as error:
        if expected and RGW_REFUSAL in str(error):
            _seen_refusal.append(f"the service refuses RGW today: {error}")
            pytest.xfail(_seen_refusal[0])
        raise


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
