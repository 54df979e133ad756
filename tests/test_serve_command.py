"""`streamproxy serve` as a new user meets it: help, mistakes, and what it says about them.

Each runs the real command in a child process and reads what a user would read.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from streamproxy.runtime.settings import OPTIONS

from .conftest import ServerProcess, stop_server

Spawn = Callable[..., Awaitable[ServerProcess]]
PYTHON_WORDS = (b"Traceback", b"invalid literal", b"could not convert", b"File exists")


async def serve(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    """Run `python -m streamproxy serve ARGV` to its end: (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamproxy",
        "serve",
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, **(env or {})},
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    for words in PYTHON_WORDS:
        assert words not in stderr, stderr.decode()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def test_help_shows_every_default() -> None:
    status, stdout, _ = await serve("--help")
    assert status == 0
    text = " ".join(stdout.split())  # argparse wraps lines
    for shown in ("127.0.0.1", "8080", "./data", "5M", "32k", "24h", "7d"):
        assert f"(default: {shown})" in text, shown
    for option in OPTIONS:
        if option.name.endswith("_timeout"):
            assert f"(default: {option.shown_default})" in text.partition(option.flag)[2]
    assert "(default: 15)" in text.partition("--header-timeout")[2]
    assert "(default: 75)" in text.partition("--keepalive-timeout")[2]


async def test_an_unknown_flag_gets_the_serve_usage() -> None:
    status, _, stderr = await serve("--bogus")
    assert status == 2
    assert stderr.startswith("usage: streamproxy serve ")
    assert "--max-size BYTES" in stderr  # the serve command's flags, not the command list
    assert stderr.rstrip().endswith("streamproxy serve: error: unrecognized arguments: --bogus")


@pytest.mark.parametrize(
    ("argv", "env", "expected"),
    [
        (["--port", "abc"], {}, "streamproxy: --port: not a port number (0 to 65535): 'abc'"),
        ([], {"STREAMPROXY_PORT": "abc"}, "streamproxy: STREAMPROXY_PORT: not a port number"),
        (["--max-size", "0"], {}, "streamproxy: --max-size: must be at least 1 byte"),
        (["--workers", "2x"], {}, "streamproxy: --workers: not a whole number: '2x'"),
        (["--fetch-timeout", "a while"], {}, "streamproxy: --fetch-timeout: not a number"),
        ([], {"STREAMPROXY_HEADER_TIMEOUT": "0"}, "streamproxy: STREAMPROXY_HEADER_TIMEOUT: "),
    ],
)
async def test_a_bad_value_is_refused_at_start_up_in_plain_words(
    argv: list[str], env: dict[str, str], expected: str
) -> None:
    status, _, stderr = await serve("--port", "0", *argv, env=env)
    assert status == 2
    assert stderr.startswith(expected), stderr
    if env:
        assert "--" not in stderr  # the variable is what to fix, not a flag never given


async def test_storage_pointing_at_a_file(tmp_path: Path) -> None:
    blocker = tmp_path / "x"
    blocker.write_text("not a directory")
    status, _, stderr = await serve("--port", "0", "--storage", str(blocker))
    assert status == 2
    assert stderr == f"streamproxy: --storage: {blocker} is a file, not a directory\n"
    assert blocker.read_text() == "not a directory"
    assert os.listdir(tmp_path) == ["x"]  # nothing made beside it


async def test_a_mistyped_variable_is_named_at_start_up(spawn: Spawn, tmp_path: Path) -> None:
    server = await spawn("--storage", str(tmp_path), env={"STREAMPROXY_MAXSIZE": "1M"})
    early = "".join(server.log)
    assert (
        "STREAMPROXY_MAXSIZE is not a setting and is ignored "
        "(did you mean STREAMPROXY_MAX_SIZE?)" in early
    )
    assert "max size 5242880 bytes" in server.log[-1]  # the typo changed nothing
    assert await stop_server(server) == 0
