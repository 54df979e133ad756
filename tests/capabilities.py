"""What the tests need from the machine, and what a missing need does: skip, or fail in CI.

On a developer's machine a test that needs a Debian package, an extra or a kernel
capability skips and names it. In CI (`CI=true`) that skip would silently empty a
whole area (every S3 test without aiobotocore, the virus scan without clamd), so
the hooks below turn it into a failure. A skip that is part of a test's design,
not about anything missing, is raised with `skip_by_design` and stays a skip.
STREAMPROXY_TEST_S3=rgw does the same for the tests on Ceph's RGW (s3servers.py).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Generator
from typing import NoReturn

import pytest

# Where Debian keeps daemons and admin tools (clamd, unshare's helpers); a non-login
# shell or a CI runner's PATH often lacks them.
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def rgw_demanded() -> bool:
    """STREAMPROXY_TEST_S3=rgw: the tests on Ceph's RGW must run (s3servers.py)."""
    return os.environ.get("STREAMPROXY_TEST_S3", "").strip().lower() == "rgw"


class DesignSkip(pytest.skip.Exception):  # type: ignore[misc,name-defined]
    """A skip that is part of the test's design: kept as a skip even when CI=true."""


def skip_by_design(reason: str) -> NoReturn:
    """Skip for a reason that no installation would change (never for a missing need)."""
    raise DesignSkip(reason)


def find_program(name: str) -> str | None:
    """A program on PATH, or in the sbin directories PATH may not list."""
    path = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN_DIRS])
    return shutil.which(name, path=path)


def require_program(name: str, package: str) -> str:
    """The path of a program from Debian's packages, or skip naming the package."""
    path = find_program(name)
    if path is None:
        pytest.skip(f"needs {name} from Debian's package {package} (make test installs it as root)")
    return path


def _skips_fail(item: pytest.Item) -> bool:
    """In CI every skip for a missing need fails; with RGW demanded, an RGW test's skip too."""
    if in_ci():
        return True
    callspec = getattr(item, "callspec", None)
    return rgw_demanded() and callspec is not None and callspec.params.get("storage_kind") == "rgw"


def _skip_reason(longrepr: object) -> str:
    if isinstance(longrepr, tuple) and len(longrepr) == 3:
        return str(longrepr[2])
    return str(longrepr)


def _as_failure(report: pytest.TestReport | pytest.CollectReport, where: str = "CI") -> None:
    reason = _skip_reason(report.longrepr).removeprefix("Skipped: ")
    report.outcome = "failed"
    demand = "CI=true" if where == "CI" else "STREAMPROXY_TEST_S3=rgw"
    report.longrepr = (
        f"{demand}: this test would skip ({reason}); in {where} a missing package or "
        "capability is a failure. Install it (make test does, as root), or, if the "
        "skip is part of the test's design, raise it with capabilities.skip_by_design."
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if not (report.skipped and _skips_fail(item)) or hasattr(report, "wasxfail"):
        return report
    if call.excinfo is not None and isinstance(call.excinfo.value, DesignSkip):
        return report
    _as_failure(report, "CI" if in_ci() else "a run demanding RGW")
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    """A whole module skipped at import (`importorskip` at its top) fails in CI too."""
    report = yield
    if in_ci() and report.skipped:
        _as_failure(report)
    return report
