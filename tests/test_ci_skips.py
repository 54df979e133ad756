"""CI=true turns a skip for a missing package or capability into a failure.

A throwaway suite, run by a child pytest with the project's hooks, skips in
every way the real one can: `pytest.skip` naming a package, `importorskip` in
a test, in a fixture and at a module's top. With CI unset all of them skip;
with CI=true all of them fail, except the one raised with `skip_by_design`.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from .capabilities import find_program

ROOT = Path(__file__).resolve().parents[1]

SUITE = {
    "conftest.py": """
import pytest
from tests.capabilities import pytest_make_collect_report, pytest_runtest_makereport

@pytest.fixture
def needs_extra():
    pytest.importorskip("no_such_extra_package", reason="the s3 extra")
""",
    "test_needs.py": """
import pytest
from tests.capabilities import require_program, skip_by_design

def test_missing_program():
    require_program("no-such-program-here", "no-such-package")

def test_missing_module():
    pytest.importorskip("no_such_module_here")

def test_missing_in_fixture(needs_extra):
    pass

def test_by_design():
    skip_by_design("only meaningful on big-endian machines")

def test_passes():
    pass
""",
    "test_whole_module.py": """
import pytest
pytest.importorskip("no_such_browser_driver")

def test_never_collected():
    pass
""",
}


async def _child_pytest(folder: Path, ci: str | None) -> tuple[dict[str, int], str]:
    """Run the throwaway suite; (outcome counts of its summary line, its whole output)."""
    env = {key: value for key, value in os.environ.items() if key != "CI"}
    if ci is not None:
        env["CI"] = ci
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    (folder / "pytest.ini").write_text("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA",
        "--continue-on-collection-errors", str(folder),
        cwd=folder, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 120)
    text = output.decode()
    (summary,) = [line for line in text.splitlines() if re.search(r" in [\d.]+s\b", line)]
    counts = {word: int(number) for number, word in re.findall(r"(\d+) (\w+)", summary)}
    return counts, text


@pytest.fixture
def suite(tmp_path: Path) -> Path:
    folder = tmp_path / "suite"
    folder.mkdir()
    for name, text in SUITE.items():
        (folder / name).write_text(text)
    return folder


async def test_skips_stay_skips_outside_ci(suite: Path) -> None:
    counts, text = await _child_pytest(suite, None)
    assert counts == {"passed": 1, "skipped": 5}, text


async def test_under_ci_a_skip_for_a_missing_need_fails(suite: Path) -> None:
    counts, text = await _child_pytest(suite, "true")
    # A skip in a test fails it; in a fixture or at a module's top it is an error.
    assert counts == {"failed": 2, "errors": 2, "passed": 1, "skipped": 1}, text
    for line in (
        "FAILED test_needs.py::test_missing_program - CI=true: this test would skip "
        "(needs no-such-program-here from Debian's package no-such-package",
        "FAILED test_needs.py::test_missing_module - CI=true",
        "ERROR test_needs.py::test_missing_in_fixture - CI=true: this test would skip "
        "(the s3 extra)",
        "ERROR test_whole_module.py - CI=true",
    ):
        assert line in text, text
    assert "DesignSkip: only meaningful on big-endian machines" in text


def test_programs_in_sbin_are_found_without_it_on_the_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """clamd lives in /usr/sbin, which a CI runner's PATH may lack."""
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    found = find_program("ldconfig")  # Debian's libc-bin: always there, always in sbin
    assert found is not None and "/sbin/" in found


@pytest.mark.parametrize(("ci", "fails"), [(None, False), ("true", True)])
async def test_make_system_packages_fails_in_ci_when_apt_fails(
    tmp_path: Path, ci: str | None, fails: bool
) -> None:
    """The real Makefile target, with stand-ins for dpkg, id and apt-get on PATH
    (a test must not install packages): every package missing, root, apt failing."""
    make = find_program("make")
    assert make is not None, "make runs the suite (make test), so it is installed"
    fakes = tmp_path / "bin"
    fakes.mkdir()
    for name, script in {"dpkg": "exit 1", "id": "echo 0", "apt-get": "exit 100"}.items():
        (fakes / name).write_text(f"#!/bin/sh\n{script}\n")
        (fakes / name).chmod(0o755)
    env = {key: value for key, value in os.environ.items() if key not in {"CI", "MAKEFLAGS"}}
    env["PATH"] = os.pathsep.join([str(fakes), env.get("PATH", os.defpath)])
    if ci is not None:
        env["CI"] = ci
    process = await asyncio.create_subprocess_exec(
        make, "-s", "-f", str(ROOT / "Makefile"), "system-packages",
        cwd=tmp_path, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    text = output.decode()
    assert "could not install curl" in text, text
    assert (process.returncode != 0) == fails, text
    assert ("CI=true: a package the tests need is missing" in text) == fails, text
