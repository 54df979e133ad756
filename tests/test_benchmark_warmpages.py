"""The benchmarks' warm memory: free page reporting paused for the run and restored after.

The suite changes a kernel setting while it runs (as root), so the test checks the
part a user relies on: the setting is back as it was afterwards, even when the run
fails, and the Machine table says what was done.
"""

from __future__ import annotations

import os

import pytest

from benchmarks import warmpages
from benchmarks.warmpages import REPORTING_ORDER, warm_memory

MiB = 1 << 20
# One kernel setting for the machine: these tests never run side by side (make test's
# parallel processes keep a group in one of them).
pytestmark = pytest.mark.xdist_group("page-reporting")


def _order() -> str | None:
    try:
        return REPORTING_ORDER.read_text().strip()
    except OSError:
        return None


def test_reporting_is_paused_during_the_run_and_restored_after_a_failure() -> None:
    before = _order()
    with pytest.raises(RuntimeError), warm_memory(64 * MiB) as state:
        if before is None:
            assert state.startswith("no free page reporting")
        elif os.geteuid() == 0:
            assert _order() == str(warmpages.PAUSED_ORDER)
            assert f"order {before} -> {warmpages.PAUSED_ORDER}" in state
        else:
            assert _order() == before
            assert "free page reporting on" in state
        raise RuntimeError("the run failed")
    assert _order() == before
    if before is None or os.geteuid() == 0:
        assert "0.1 GiB touched first" in state


def test_nothing_is_touched_or_paused_when_asked_for_none() -> None:
    before = _order()
    with warm_memory(0) as state:
        assert _order() == before
    assert "touched" not in state


def test_touch_faults_in_the_memory_and_reports_its_time() -> None:
    seconds = warmpages.touch(32 * MiB)
    assert 0 < seconds < 30
    assert warmpages.touch(0) == 0.0
    assert warmpages.available_memory() > 64 * MiB
