"""The README's "Try S3 locally" recipe, run as written but for ports and paths.

Its commands run against a moto server of their own on a free port in place of
5000; the test's virtualenv stands for `.venv/bin/`; `make serve ARGS=...` is the
same `streamproxy serve ARGS` on a free port in place of 8080; the `pip install`
is not repeated (its packages are the dev extra's). `make -n` shows what
`make serve` installs into a fresh virtualenv.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path

from .conftest import ServerProcess, require_program, run_program
from .s3support import free_port

ROOT = Path(__file__).parent.parent
Spawn = Callable[..., Awaitable[ServerProcess]]


def recipe() -> list[str]:
    """The recipe's two shell blocks: commands to set up and serve, then to try it."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("#### Try S3 locally", 1)[1].split("\n#### ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, re.DOTALL)
    assert len(blocks) == 2, blocks
    return blocks


@contextlib.contextmanager
def started(command: list[str]) -> Iterator[None]:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        process.terminate()
        process.wait(30)


def wait_listening(port: int) -> None:
    deadline = time.monotonic() + 30
    while True:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        assert time.monotonic() < deadline, f"nothing listens on {port}"
        time.sleep(0.1)


def test_make_serve_installs_s3_support(tmp_path: Path) -> None:
    make = require_program("make", "make")
    dry_run = subprocess.run(
        [make, "-n", "serve", f"VENV={tmp_path / 'venv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    installs = [line for line in dry_run.stdout.splitlines() if " install " in line]
    assert any(re.search(r"-e '\.\[[^]]*\bs3\b[^]]*\]'", line) for line in installs), installs


async def test_the_s3_recipe_works_as_written(spawn: Spawn, tmp_path: Path) -> None:
    curl = require_program("curl", "curl")
    setup, trial = recipe()
    moto_port = free_port()
    venv_bin = str(Path(sys.executable).parent) + "/"

    def localise(word: str) -> str:
        return word.replace(".venv/bin/", venv_bin).replace("5000", str(moto_port))

    commands = [shlex.split(line, comments=True) for line in setup.splitlines()]
    make_help, pip_install, moto, export, create_bucket, make_serve = commands
    assert make_help[:2] == ["make", "serve"]  # makes the venv: see the make -n test
    assert pip_install[0] == ".venv/bin/pip" and {"moto[server]", "aiobotocore"} <= set(pip_install)
    assert moto[-1] == "&" and moto[-2] == "2>/dev/null"
    assert export[0] == "export"
    environment = dict(item.split("=", 1) for item in export[1:])
    environment |= {"AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    assert make_serve[:2] == ["make", "serve"] and make_serve[2].startswith("ARGS=")
    serve_args = [localise(word) for word in shlex.split(make_serve[2].removeprefix("ARGS="))]

    with started([localise(word) for word in moto[:-2]]):
        await asyncio.to_thread(wait_listening, moto_port)
        made = await asyncio.create_subprocess_exec(
            *[localise(word) for word in create_bucket], env={**os.environ, **environment}
        )
        assert await asyncio.wait_for(made.wait(), 60) == 0
        server = await spawn(*serve_args, env=environment)
        script = trial.replace("http://127.0.0.1:8080", server.url).replace("curl ", curl + " ")
        code, out, err = await run_program("bash", "-ec", script, cwd=tmp_path)
        assert code == 0, err
        assert b'"name": "42_hello.txt"' in out
        assert out.endswith(b"}hello from S3\n")  # the upload's JSON, then the download
