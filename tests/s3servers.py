"""Which S3 servers the suite runs on, and what it knows a server refuses today.

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


def rgw_demanded() -> bool:
    return os.environ.get("STREAMPROXY_TEST_S3", "").strip().lower() == "rgw"


@contextlib.contextmanager
def expected_refusal(storage_kind: str) -> Iterator[None]:
    """A service start on RGW refused for the known reason: an expected failure, unless demanded."""
    try:
        yield
    except StorageError as error:
        if storage_kind == "rgw" and RGW_REFUSAL in str(error) and not rgw_demanded():
            pytest.xfail(f"the service refuses RGW today: {error}")
        raise
