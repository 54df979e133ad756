"""Settings from flags, STREAMPROXY_* variables and a TOML file; the command line; health."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from streamproxy.cli import build_parser
from streamproxy.settings import OPTIONS, SettingsError, load_settings, parse_size

from .conftest import ServerProcess, Service, stop_server

Spawn = Callable[..., Awaitable[ServerProcess]]


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("5242880", 5242880),
        ("5M", 5 * 1024**2),
        ("512k", 512 * 1024),
        ("2G", 2 * 1024**3),
        ("1MiB", 1024**2),
        (" 10 ", 10),
    ],
)
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "5X", "-1", "1.5M", "M"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(ValueError, match="not a size"):
        parse_size(text)


def parse(*argv: str, environ: dict[str, str] | None = None):
    return load_settings(build_parser().parse_args(["serve", *argv]), environ or {})


def test_defaults_match_the_contract() -> None:
    settings = parse()
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)
    assert settings.storage == "./data"
    assert settings.max_size == 5_242_880
    assert settings.allow_type == settings.deny_type == ()
    assert settings.api_key == ()
    assert settings.fsync is True
    assert settings.compat_status is False


def test_every_source_and_its_precedence(tmp_path: Path) -> None:
    config = tmp_path / "streamproxy.toml"
    config.write_text(
        '[streamproxy]\nport = 9000\nmax-size = "1M"\nhost = "0.0.0.0"\n'
        'allow-type = ["image/*", ".pdf"]\nbase_path = "media/"\n'
    )
    environ = {
        "STREAMPROXY_PORT": "9100",
        "STREAMPROXY_API_KEY": "k1, k2",
        "STREAMPROXY_COMPAT_STATUS": "true",
    }
    settings = parse("--config", str(config), "--port", "9200", environ=environ)
    assert settings.port == 9200  # flag over environment over file
    assert settings.host == "0.0.0.0"  # from the file
    assert settings.max_size == 1024**2
    assert [str(rule) for rule in settings.allow_type] == ["image/*", ".pdf"]
    assert settings.base_path == "/media"
    assert settings.api_key == ("k1", "k2")
    assert settings.compat_status is True
    settings = parse("--config", str(config), environ=environ)
    assert settings.port == 9100


def test_repeatable_flags_and_switches() -> None:
    settings = parse(
        "--deny-type",
        "text/html",
        "--deny-type",
        "exe",
        "--compat-status",
        "--api-key",
        "a",
        "--api-key",
        "b",
        "--public-url",
        "https://x.example/fe/",
    )
    assert [str(rule) for rule in settings.deny_type] == ["text/html", ".exe"]
    assert settings.compat_status is True
    assert settings.api_key == ("a", "b")
    assert str(settings.public_url) == "https://x.example/fe/"


@pytest.mark.parametrize(
    ("argv", "environ", "message"),
    [
        (["--max-size", "lots"], {}, "--max-size"),
        (["--port", "70000"], {}, "--port"),
        (["--allow-type", "not a type"], {}, "--allow-type"),
        (["--public-url", "ftp://x"], {}, "--public-url"),
        (["--base-path", "/a/../b"], {}, "--base-path"),
        ([], {"STREAMPROXY_FSYNC": "maybe"}, "environment: --fsync"),
        ([], {"STREAMPROXY_MAX_TRANSFERS": "0"}, "--max-transfers"),
        (["--chunk-size", "4095"], {}, "--chunk-size: chunk size must be between 4k and 16M"),
        (["--chunk-size", "16777217"], {}, "--chunk-size"),
        (["--s3-part-size", "5242879"], {}, "--s3-part-size: S3 part size must be between"),
        (["--s3-part-size", "5G"], {}, "--s3-part-size"),
        (["--s3-endpoint", "minio:9000"], {}, "--s3-endpoint: not an http"),
        (["--fetch-proxy", "socks5://p:1080"], {}, "--fetch-proxy: not an http"),
        (["--workers", "0"], {}, "--workers"),
        (["--cache-size", "lots"], {}, "--cache-size"),
    ],
)
def test_bad_values_name_the_setting(
    argv: list[str], environ: dict[str, str], message: str
) -> None:
    with pytest.raises(SettingsError, match=message):
        parse(*argv, environ=environ)


@pytest.mark.parametrize(
    ("argv", "field", "value"),
    [
        (["--chunk-size", "4k"], "chunk_size", 4096),
        (["--chunk-size", "16M"], "chunk_size", 16 * 1024 * 1024),
        (["--s3-part-size", "5M"], "s3_part_size", 5 * 1024 * 1024),
        (["--s3-part-size", "4G"], "s3_part_size", 4 * 1024**3),
        (["--s3-endpoint", "http://minio:9000"], "s3_endpoint", "http://minio:9000"),
    ],
)
def test_limits_of_values_are_accepted(argv: list[str], field: str, value: object) -> None:
    assert getattr(parse(*argv), field) == value


def test_bad_config_files(tmp_path: Path) -> None:
    unknown = tmp_path / "unknown.toml"
    unknown.write_text("colour = 'blue'\n")
    with pytest.raises(SettingsError, match="unknown setting 'colour'"):
        parse("--config", str(unknown))
    broken = tmp_path / "broken.toml"
    broken.write_text("port = \n")
    with pytest.raises(SettingsError, match="not valid TOML"):
        parse("--config", str(broken))
    with pytest.raises(SettingsError, match="No such file"):
        parse("--config", str(tmp_path / "missing.toml"))


def test_readme_lists_every_setting() -> None:
    """The README's configuration table has a row for every option, flag and variable."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    rows = [line for line in readme.splitlines() if line.startswith("| `--")]
    for option in OPTIONS:
        assert any(f"`{option.flag}`" in row and f"`{option.env}`" in row for row in rows), (
            option.name
        )


async def test_command_line_refuses_bad_flags_clearly() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamproxy",
        "serve",
        "--max-size",
        "huge",
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    assert process.returncode == 2
    assert b"--max-size" in stderr and b"not a size" in stderr


async def test_console_script_version() -> None:
    script = shutil.which("streamproxy", path=str(Path(sys.executable).parent))
    assert script, "the streamproxy console script is installed with the package"
    process = await asyncio.create_subprocess_exec(
        script, "--version", stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await process.communicate()
    assert stdout.startswith(b"streamproxy ")


async def test_start_up_line_and_first_upload(spawn: Spawn, tmp_path: Path) -> None:
    storage = tmp_path / "data"
    server = await spawn("--storage", str(storage), env={"STREAMPROXY_MAX_SIZE": "1M"})
    start_line = server.log[-1]
    assert f"listening on {server.url}/" in start_line
    assert str(storage) in start_line and "1048576" in start_line
    async with aiohttp.ClientSession() as session:
        form = aiohttp.FormData()
        form.add_field("conversationId", "1")
        form.add_field("file", b"hello", filename="hello.txt")
        async with session.post(server.url + "/files", data=form) as response:
            assert response.status == 200
    assert (storage / "1_hello.txt").read_bytes() == b"hello"
    assert await stop_server(server) == 0
    assert any('"POST /files" 200' in line for line in server.log)  # the access log line


async def test_start_up_fails_clearly_for_unusable_storage(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "streamproxy",
        "serve",
        "--port",
        "0",
        "--storage",
        str(blocker / "data"),
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 1
    assert b"cannot start" in stderr and b"Not a directory" in stderr


@pytest.mark.local_only  # breaks the directory; S3 readiness: test_s3 outage test
async def test_health_and_readiness(service: Service) -> None:
    async with service.session.get(service.url + "/healthz") as response:
        assert response.status == 200
    async with service.session.get(service.url + "/readyz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ready"
    shutil.rmtree(service.root / ".tmp")
    (service.root / ".tmp").write_text("in the way")
    async with service.session.get(service.url + "/readyz") as response:
        assert response.status == 503
        body = await response.json()
        assert body["error"] == "not_ready"
        assert str(service.root) in body["detail"]
    async with service.session.get(service.url + "/healthz") as response:
        assert response.status == 200
