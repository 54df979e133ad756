"""Progress bars for the command line: tqdm, fed by the client's progress callback.

tqdm is small, has no dependencies of its own, writes to stderr, and shows what
the issue asks for out of the box: bytes done, rate and time left. A bar shows
only on a terminal (or with `--progress`), and in auto mode only once a transfer
has taken half a second, so quick transfers and scripts stay quiet. A clock keeps
it alive while no byte moves: a server that stalls before its first chunk (or
before its answer) shows a bar whose elapsed time runs, not a silent terminal.
"""

from __future__ import annotations

import asyncio
import sys
from types import TracebackType
from typing import Any

from tqdm import tqdm

AUTO_DELAY = 0.5
TICK = 0.5  # how often a bar is redrawn when no progress arrives


def wanted(flag: bool | None, json_output: bool) -> bool:
    """`--progress`/`--no-progress` decide; otherwise bars go to a terminal, never with --json."""
    if flag is not None:
        return flag
    return not json_output and sys.stderr.isatty()


class TransferBar:
    """One transfer's bar; call it as `Progress` (done, total) and close it afterwards.

    Use it as an async context manager: from the start of the transfer, after
    the delay, the bar shows and its clock runs even while no progress arrives.
    """

    def __init__(self, label: str, *, enabled: bool, forced: bool = False) -> None:
        self.label = label
        self.enabled = enabled
        self.delay = 0.0 if forced else AUTO_DELAY
        self._bar: tqdm[Any] | None = None
        self._fed = False  # progress has arrived (the bar may exist before it, shown by the clock)
        self._clock: asyncio.Task[None] | None = None

    def __call__(self, done: int, total: int | None) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            self._bar = self._open(done, total, self.delay)
        elif not self._fed:
            # The clock opened the bar while waiting; the first progress sets its start.
            # `initial`: a resumed download's bytes on disk do not count toward the rate.
            self._bar.initial = done
            self._bar.n = self._bar.last_print_n = done
            self._bar.total = total
            self._bar.refresh()
        else:
            if total is not None and self._bar.total != total:
                self._bar.total = total
            self._bar.update(done - self._bar.n)
        self._fed = True

    def _open(self, done: int, total: int | None, delay: float) -> tqdm[Any]:
        return tqdm(
            total=total,
            initial=done,
            desc=self.label,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            miniters=1,
            dynamic_ncols=True,
            delay=delay,
            file=sys.stderr,
        )

    async def _run_clock(self) -> None:
        await asyncio.sleep(self.delay)
        while True:
            if self._bar is None:
                self._bar = self._open(0, None, 0.0)  # nothing has arrived yet
            else:
                self._bar.refresh()  # shows a delayed bar, and moves its elapsed time
            await asyncio.sleep(TICK)

    def close(self) -> None:
        if self._clock is not None:
            self._clock.cancel()
            self._clock = None
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    async def __aenter__(self) -> TransferBar:
        if self.enabled:
            self._clock = asyncio.create_task(self._run_clock())
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        clock = self._clock
        self.close()
        if clock is not None:
            await asyncio.wait([clock])  # let the cancelled clock finish; raises nothing
