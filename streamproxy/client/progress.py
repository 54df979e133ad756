"""Progress bars for the command line: tqdm, fed by the client's progress callback.

tqdm is small, has no dependencies of its own, writes to stderr, and shows what
the issue asks for out of the box: bytes done, rate and time left. A bar shows
only on a terminal (or with `--progress`), and in auto mode only once a transfer
has taken half a second, so quick transfers and scripts stay quiet.
"""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

from tqdm import tqdm

AUTO_DELAY = 0.5


def wanted(flag: bool | None, json_output: bool) -> bool:
    """`--progress`/`--no-progress` decide; otherwise bars go to a terminal, never with --json."""
    if flag is not None:
        return flag
    return not json_output and sys.stderr.isatty()


class TransferBar:
    """One transfer's bar; call it as `Progress` (done, total) and close it afterwards."""

    def __init__(self, label: str, *, enabled: bool, forced: bool = False) -> None:
        self.label = label
        self.enabled = enabled
        self.delay = 0.0 if forced else AUTO_DELAY
        self._bar: tqdm[Any] | None = None

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            # `initial`: a resumed download's bytes on disk do not count toward the rate.
            self._bar = tqdm(
                total=total,
                initial=done,
                desc=self.label,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                miniters=1,
                dynamic_ncols=True,
                delay=self.delay,
                file=sys.stderr,
            )
            return
        if total is not None and self._bar.total != total:
            self._bar.total = total
        self._bar.update(done - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> TransferBar:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
