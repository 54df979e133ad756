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
from streamproxy.client.commands import KEY_ENV, SERVER_ENV
from streamproxy.runtime.settings import (
    OPTIONS,
    Settings,
    SettingsError,
    format_size,
    load_settings,
    parse_size,
)

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
        ([], {"STREAMPROXY_FSYNC": "maybe"}, "^STREAMPROXY_FSYNC: not a boolean"),
        ([], {"STREAMPROXY_MAX_TRANSFERS": "0"}, "^STREAMPROXY_MAX_TRANSFERS: must be at least 1"),
        (["--chunk-size", "4095"], {}, "--chunk-size: chunk size must be between 4k and 16M"),
        (["--chunk-size", "16777217"], {}, "--chunk-size"),
        (["--s3-part-size", "5242879"], {}, "--s3-part-size: S3 part size must be between"),
        (["--s3-part-size", "5G"], {}, "--s3-part-size"),
        (["--s3-endpoint", "minio:9000"], {}, "--s3-endpoint: not an http"),
        (["--fetch-proxy", "socks5://p:1080"], {}, "--fetch-proxy: not an http"),
        (["--workers", "0"], {}, "--workers"),
        (["--cache-size", "lots"], {}, "--cache-size"),
        (["--max-size", "0"], {}, "^--max-size: must be at least 1 byte"),
        ([], {"STREAMPROXY_MAX_SIZE": "0k"}, "^STREAMPROXY_MAX_SIZE: must be at least 1 byte"),
        (["--port", "abc"], {}, r"^--port: not a port number \(0 to 65535\): 'abc'$"),
        ([], {"STREAMPROXY_PORT": "abc"}, "^STREAMPROXY_PORT: not a port number"),
        (["--workers", "two"], {}, "^--workers: not a whole number: 'two'$"),
        (["--client-timeout", "soon"], {}, "^--client-timeout: not a number of seconds"),
        (["--header-timeout", "0"], {}, "^--header-timeout: must be a positive number"),
        ([], {"STREAMPROXY_HEADER_TIMEOUT": "x"}, "^STREAMPROXY_HEADER_TIMEOUT: not a number"),
        (["--keepalive-timeout", "-1"], {}, "^--keepalive-timeout: must be a positive"),
        (["--keepalive-timeout", "inf"], {}, "^--keepalive-timeout: must be a positive"),
        (["--max-head-size", "1023"], {}, "^--max-head-size: .* between 1k and 1M"),
        (["--max-head-size", "2M"], {}, "^--max-head-size: .* between 1k and 1M"),
        ([], {"STREAMPROXY_MAX_HEAD_SIZE": "big"}, "^STREAMPROXY_MAX_HEAD_SIZE: not a size"),
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
        (["--max-size", "1"], "max_size", 1),
        (["--max-head-size", "1k"], "max_head_size", 1024),
        (["--max-head-size", "1M"], "max_head_size", 1024**2),
        (["--header-timeout", "0.5"], "header_timeout", 0.5),
    ],
)
def test_limits_of_values_are_accepted(argv: list[str], field: str, value: object) -> None:
    assert getattr(parse(*argv), field) == value


def test_the_head_and_keep_alive_settings(tmp_path: Path) -> None:
    """Defaults as issue 10 sets them (15 s, 75 s as nginx, 32 KiB), and every source."""
    settings = parse()
    assert (settings.header_timeout, settings.keepalive_timeout) == (15.0, 75.0)
    assert settings.max_head_size == 32 * 1024
    config = tmp_path / "heads.toml"
    config.write_text('header-timeout = 5\nkeepalive_timeout = 30.5\nmax-head-size = "64k"\n')
    settings = parse("--config", str(config))
    assert (settings.header_timeout, settings.keepalive_timeout) == (5.0, 30.5)
    assert settings.max_head_size == 64 * 1024
    settings = parse(
        "--header-timeout",
        "2",
        environ={"STREAMPROXY_KEEPALIVE_TIMEOUT": "9", "STREAMPROXY_MAX_HEAD_SIZE": "16k"},
    )
    assert (settings.header_timeout, settings.keepalive_timeout) == (2.0, 9.0)
    assert settings.max_head_size == 16 * 1024


def test_a_file_in_the_way_of_the_storage_directory(tmp_path: Path) -> None:
    blocker = tmp_path / "x"
    blocker.write_text("mine")
    with pytest.raises(SettingsError, match=f"^--storage: {blocker} is a file, not a directory$"):
        parse("--storage", str(blocker))
    with pytest.raises(SettingsError, match=r"^STREAMPROXY_STORAGE: .* is a file, not a directory"):
        parse(environ={"STREAMPROXY_STORAGE": str(blocker)})
    assert blocker.read_text() == "mine"
    assert parse("--storage", str(tmp_path)).storage == str(tmp_path)  # a directory
    assert parse("--storage", str(tmp_path / "new")).storage == str(tmp_path / "new")


@pytest.mark.parametrize("option", OPTIONS, ids=lambda option: option.name)
def test_no_value_gets_a_raw_python_error(option, tmp_path: Path) -> None:
    """Nonsense in any flag, variable or TOML type is refused (or taken) in our words,
    under the name it was given by; never `invalid literal for int()` or a traceback."""
    config = tmp_path / "c.toml"
    attempts: list[tuple[list[str], dict[str, str], str]] = [
        ([], {option.env: "x!"}, option.env),
        ([], {option.env: ""}, option.env),
    ]
    if not option.switch:
        attempts.append(([option.flag, "x!"], {}, option.flag))
    for toml_value in ("true", "1", "1.5", "[1, 2]", "{a = 1}", "1979-05-27"):
        attempts.append((["--config", str(config)], {}, f"config file {config}: {option.name}"))
        config.write_text(f"{option.name} = {toml_value}\n")
        for argv, environ, label in attempts:
            try:
                parse(*argv, environ=environ)
            except SettingsError as error:
                message = str(error)
                assert message.startswith(label + ": "), message
                for python_words in ("invalid literal", "could not convert", "object has no"):
                    assert python_words not in message, message
        attempts.pop()


def test_toml_values_of_the_wrong_type_are_refused_clearly(tmp_path: Path) -> None:
    config = tmp_path / "typed.toml"
    config.write_text("fsync = 1\nport = 8081\n")
    settings = parse("--config", str(config))
    assert (settings.fsync, settings.port) == (True, 8081)
    for line, message in [
        ("port = true", "port: not a port number"),
        ("port = 80.5", "port: not a port number"),
        ("host = ['a', 'b']", "host: needs a single value"),
        ("max-size = {a = 1}", "max-size: needs a single value"),
    ]:
        config.write_text(line + "\n")
        with pytest.raises(SettingsError, match=message):
            parse("--config", str(config))


def test_unknown_variables_are_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    environ = {
        "STREAMPROXY_MAXSIZE": "1M",  # a typo: the cap stays the default
        "STREAMPROXY_QQQ": "1",
        SERVER_ENV: "http://x",  # the client commands' variables are no typos
        KEY_ENV: "k",
        "STREAMPROXY_CONFIG": "",
        "OTHER_MAXSIZE": "1",
    }
    with caplog.at_level("WARNING", logger="streamproxy.settings"):
        settings = parse(environ=environ)
    assert settings.max_size == 5 * 1024**2
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == [
        "STREAMPROXY_MAXSIZE is not a setting and is ignored (did you mean STREAMPROXY_MAX_SIZE?)",
        "STREAMPROXY_QQQ is not a setting and is ignored",
    ]


def test_a_mistyped_config_key_names_the_closest_setting(tmp_path: Path) -> None:
    config = tmp_path / "typo.toml"
    config.write_text("keepalive-timout = 5\n")
    with pytest.raises(SettingsError, match=r"unknown setting 'keepalive-timout' \(did you mean"):
        parse("--config", str(config))


def test_each_setting_is_declared_once() -> None:
    """Every option is a `Settings` field; help texts carry no hand-written default, the
    declared default is what `--help` shows, and `Settings()` holds the same values."""
    internal = {"storage_prepared", "reuse_port", "s3_claims"}  # not user settings
    assert [option.name for option in OPTIONS] == [
        name for name in Settings.__dataclass_fields__ if name not in internal
    ]
    defaults = Settings()
    for option in OPTIONS:
        assert "default" not in option.help, option.name
        assert getattr(defaults, option.name) == option.default
    shown = {option.name: option.shown_default for option in OPTIONS}
    assert shown["max_size"] == format_size(defaults.max_size) == "5M"
    assert shown["stale_after"] == "24h" and shown["link_ttl"] == "7d"
    assert shown["max_head_size"] == "32k" and shown["header_timeout"] == "15"


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
        row = next((row for row in rows if row.split("|")[1].strip() == f"`{option.flag}`"), "")
        assert f"`{option.env}`" in row, option.name
        if option.shown_default is not None and option.default is not None:
            default_cell = row.split("|")[3]
            assert f"`{option.shown_default}`" in default_cell, (option.name, default_cell)


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
