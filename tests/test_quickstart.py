"""The README's quick start, run as written: its curl commands against a real server.

The commands are read from README.md itself (the `## Quick start` section), so
the example and the service cannot drift apart unnoticed. Only the address
changes: the test's server listens on a free port instead of 8080.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path

from .conftest import ServerProcess, random_bytes, require_program, run_program

README = Path(__file__).resolve().parents[1] / "README.md"
README_ADDRESS = "http://127.0.0.1:8080"
PHOTO = b"\x89PNG\r\n\x1a\n" + random_bytes(48213 - 8, seed=21)


def quick_start() -> tuple[list[str], dict[str, object]]:
    """The section's curl commands, and the upload answer its comment shows."""
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```sh\n(.*?)```", section, flags=re.DOTALL)
    lines = [line for block in blocks for line in block.splitlines()]
    commands = [line for line in lines if line.startswith("curl ")]
    shown_answer = " ".join(line.removeprefix("#").strip() for line in lines if line[:1] == "#")
    return commands, json.loads(shown_answer)


async def test_the_readme_quick_start_works_as_written(
    spawn: Callable[..., Awaitable[ServerProcess]], tmp_path: Path
) -> None:
    curl = require_program("curl", "curl")
    commands, shown = quick_start()
    assert len(commands) == 2, commands  # the upload, then the download
    server = await spawn("--storage", str(tmp_path / "data"))
    folder = tmp_path / "here"
    folder.mkdir()
    (folder / "photo.png").write_bytes(PHOTO)  # the file is uploaded from this folder
    answers = []
    for attempt in range(2):  # a user who runs the example twice
        for command in commands:
            line = command.replace(README_ADDRESS, server.url)
            assert line.startswith("curl ") and server.url in line
            code, stdout, stderr = await run_program(
                "sh", "-c", curl + line.removeprefix("curl"), cwd=folder
            )
            assert code == 0, (attempt, command, stderr.decode())
            if "-F" in command:
                answers.append(json.loads(stdout))
        assert (folder / "11111_photo.png").read_bytes() == PHOTO
        assert (folder / "photo.png").read_bytes() == PHOTO
    first = answers[0]
    assert set(first) == set(shown)
    for key in ("message", "name", "type", "size"):
        assert first[key] == shown[key], key
    assert first["url"] == str(shown["url"]).replace(README_ADDRESS, server.url)
    assert answers[1]["name"] != first["name"]  # the second upload got a name of its own
