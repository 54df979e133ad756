"""The Dockerfile and the sidecar examples in docs/, checked without a container engine.

No Docker runs here, so what the image would do is run on this machine instead:
the Dockerfile's ENV starts `streamproxy serve` as its ENTRYPOINT would, and its
HEALTHCHECK command runs against that server. The examples' settings must be
ones the service knows, with values it accepts.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from yarl import URL

from streamproxy.runtime.settings import ENV_PREFIX, OPTIONS, load_settings

from .conftest import ServerProcess

ROOT = Path(__file__).parent.parent
DOCKERFILE = ROOT / "Dockerfile"
EXAMPLES = [
    ROOT / "docs" / "docker-compose.sidecar.yaml",
    ROOT / "docs" / "kubernetes-sidecar.yaml",
]
KNOWN_VARIABLES = {option.env for option in OPTIONS} | {ENV_PREFIX + "CONFIG"}
Spawn = Callable[..., Awaitable[ServerProcess]]


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text(encoding="utf-8"))
    instructions = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            keyword, _, arguments = line.strip().partition(" ")
            instructions.append((keyword.upper(), arguments.strip()))
    return instructions


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last_from = max(i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM")
    return instructions[last_from:]


def image_environment() -> dict[str, str]:
    environment: dict[str, str] = {}
    for keyword, arguments in final_stage():
        if keyword == "ENV":
            environment.update(re.findall(r"(\w+)=(\S+)", arguments))
    return environment


def exec_form(keyword: str) -> list[str]:
    """The JSON array of the last `keyword` (ENTRYPOINT, or HEALTHCHECK's CMD)."""
    arguments = [args for kw, args in final_stage() if kw == keyword][-1]
    return list(json.loads(arguments[arguments.index("[") :]))


def test_image_runs_unprivileged_with_a_health_check() -> None:
    keywords = [keyword for keyword, _ in final_stage()]
    assert "USER" in keywords and "HEALTHCHECK" in keywords
    user = [args for keyword, args in final_stage() if keyword == "USER"][-1]
    assert user not in {"root", "0"}
    assert keywords.index("USER") > max(i for i, k in enumerate(keywords) if k == "RUN")
    assert exec_form("ENTRYPOINT") == ["streamproxy", "serve"]
    assert image_environment()["STREAMPROXY_HOST"] == "0.0.0.0"  # reachable from outside


async def run_health_check(environment: dict[str, str]) -> int:
    command = exec_form("HEALTHCHECK")
    assert command[0] == "python"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *command[1:],
        env={**os.environ, **environment},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    return await asyncio.wait_for(process.wait(), 30)


async def test_the_image_configuration_serves_and_passes_its_health_check(
    spawn: Spawn, tmp_path: Path
) -> None:
    """ENTRYPOINT with the image's ENV (storage moved to a temp dir, loopback only);
    the HEALTHCHECK follows the port and base path the container is given."""
    environment = {
        **image_environment(),
        "STREAMPROXY_HOST": "127.0.0.1",
        "STREAMPROXY_STORAGE": str(tmp_path / "data"),
        "STREAMPROXY_BASE_PATH": "/media",
    }
    server = await spawn(env=environment)
    port = str(URL(server.url).port)
    async with aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        form.add_field("conversationId", "7")
        form.add_field("file", b"from the image", filename="i.txt")
        async with session.post(f"{server.url}/media/files", data=form) as response:
            assert response.status == 200
    assert (tmp_path / "data" / "7_i.txt").read_bytes() == b"from the image"
    healthy = {"STREAMPROXY_PORT": port, "STREAMPROXY_BASE_PATH": "/media"}
    assert await run_health_check(healthy) == 0
    assert await run_health_check({**healthy, "STREAMPROXY_BASE_PATH": "/elsewhere"}) != 0
    server.process.terminate()
    await server.process.wait()
    assert await run_health_check(healthy) != 0  # nothing listening any more


def example_variables(path: Path) -> dict[str, str]:
    """STREAMPROXY_* settings of an example, in compose's or Kubernetes' spelling."""
    text = path.read_text(encoding="utf-8")
    found = dict(re.findall(r"\b(STREAMPROXY_\w+):\s*\"?([^\"\s#]+)", text))
    for name, value in re.findall(r"name:\s*(STREAMPROXY_\w+),\s*value:\s*\"([^\"]*)\"", text):
        found[name] = value
    for name in re.findall(r"name:\s*(STREAMPROXY_\w+)\s*$", text, re.MULTILINE):
        found.setdefault(name, "a-value-from-a-kubernetes-secret")  # valueFrom
    return found


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_examples_use_known_settings_with_valid_values(example: Path) -> None:
    variables = example_variables(example)
    assert len(variables) >= 4, "the example sets the service up"
    assert set(variables) <= KNOWN_VARIABLES
    settings = load_settings(None, {**image_environment(), **variables})
    assert settings.max_size == 16 * 1024 * 1024  # WhatsApp's limit, as both examples say
    assert settings.retention is not None and settings.shutdown_timeout == 30
