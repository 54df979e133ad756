"""Clean-ups that must finish even when the task running them is cancelled.

An abort waits for work in flight (a worker thread writing the temporary, a part
being uploaded) before it frees what that work uses: closing a descriptor a
thread still writes to could send its bytes into whatever file next gets that
number. So a cancellation (or Ctrl-C) that arrives during the wait must not cut
it short; nor may it be swallowed, or the task that was told to stop goes on as
if nothing happened. It is held, and raised once the clean-up is done.
"""

from __future__ import annotations

import asyncio
from typing import Any


class Interruptions:
    """Holds a cancellation or interrupt of the current task until `reraise`."""

    def __init__(self) -> None:
        self._task = asyncio.current_task()
        self._cancelling = self._task.cancelling() if self._task is not None else 0
        self._held: BaseException | None = None

    def _hold(self, error: BaseException) -> None:
        if self._held is None:
            self._held = error

    def _cancelled_here(self) -> bool:
        """Was this task cancelled (rather than the awaited one)?"""
        return self._task is not None and self._task.cancelling() > self._cancelling

    async def wait(self, future: asyncio.Future[Any]) -> None:
        """Wait until `future` is done, however it ends: its own failure is reported
        by whoever awaits it, not here."""
        while not future.done():
            try:
                await asyncio.shield(future)
            except asyncio.CancelledError as error:
                if self._cancelled_here():
                    self._hold(error)
            except (KeyboardInterrupt, SystemExit) as error:
                self._hold(error)
            except Exception:  # the future's own failure, reported by whoever awaits it
                pass

    def reraise(self) -> None:
        """After the clean-up: raise the cancellation or interrupt that arrived during it."""
        held, self._held = self._held, None
        if held is not None:
            raise held
