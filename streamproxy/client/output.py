"""What every client command shares: exit codes, the usage error, output, the base class.

Results go to stdout, as text or, with `--json`, one JSON object per line;
problems go to stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import MediaError
from .media_client import MediaClient

OK, FAILED, USAGE, INTERRUPTED = 0, 1, 2, 130


class UsageError(Exception):
    """The command line cannot be carried out as given (exit 2)."""


class Output:
    """Text for people, JSON lines for programs; failures also on stderr."""

    def __init__(self, arguments: argparse.Namespace) -> None:
        self.json = bool(arguments.json)
        self.command = arguments.command

    def result(self, document: dict[str, Any], text: str) -> None:
        if self.json:
            print(json.dumps(document, ensure_ascii=False), flush=True)
        else:
            print(text, flush=True)

    def failure(self, error: MediaError, subject: str, **context: str) -> None:
        print(f"streamproxy {self.command}: {subject}: {error}", file=sys.stderr, flush=True)
        if self.json:
            print(json.dumps({**context, **error.to_json()}, ensure_ascii=False), flush=True)


def human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


class Command:
    """Check the arguments before anything is sent, then run against the service."""

    def prepare(self, arguments: argparse.Namespace) -> Callable[[MediaClient], Awaitable[int]]:
        raise NotImplementedError
