"""Settings: one table of options, read from flags, `STREAMPROXY_*` variables and a TOML file.

Every option is declared once in `OPTIONS`; the command line, the environment and
the config file are all derived from that table, so they cannot drift apart.
Precedence: command line > environment > config file > default.
"""

from __future__ import annotations

import argparse
import os
import re
import tomllib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from aiohttp import web
from yarl import URL

from .cors import parse_cors_origin
from .fetch.safety import AllowRule, parse_allow_rule
from .mediatypes import TypeRule, parse_type_rule
from .scan import ClamdAddress

ENV_PREFIX = "STREAMPROXY_"
DEFAULT_MAX_SIZE = 5 * 1024 * 1024

# Bytes per trip to storage (a write batch, a chunk read back). With aiohttp's read
# buffer (server.READ_BUFFER) and WRITES_IN_FLIGHT batches this sets an upload's
# memory; 256 KiB saved ~0.3 MiB per upload but was 15-20% slower (RESULTS.md).
DEFAULT_CHUNK_SIZE = 512 * 1024

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kKmMgGtT]?)(i?[bB])?\s*$")
_SIZE_FACTORS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the setting."""


def parse_size(text: str | int) -> int:
    """Parse a byte count such as `5242880`, `5M`, `512k` or `2G` (binary multiples)."""
    if isinstance(text, int):
        if text < 0:
            raise ValueError(f"a size cannot be negative: {text}")
        return text
    match = _SIZE_RE.match(text)
    if not match:
        raise ValueError(f"not a size: {text!r} (use bytes, or a suffix k, M, G: 5M)")
    return int(match.group(1)) * _SIZE_FACTORS[match.group(2).lower()]


def parse_bool(text: str | bool) -> bool:
    if isinstance(text, bool):
        return text
    lowered = text.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"not a boolean: {text!r} (use true or false)")


def parse_base_path(text: str) -> str:
    """Normalise a route prefix to `""` or `/segment[/segment...]` without a trailing slash."""
    stripped = text.strip().strip("/")
    if not stripped:
        return ""
    if any(part in {"", ".", ".."} for part in stripped.split("/")) or "?" in stripped:
        raise ValueError(f"not a usable path prefix: {text!r}")
    return "/" + stripped


def parse_public_url(text: str) -> URL:
    url = URL(text.strip())
    if url.scheme not in {"http", "https"} or not url.host:
        raise ValueError(f"not an absolute http(s) URL: {text!r}")
    return url.with_query(None).with_fragment(None)


def parse_port(text: str | int) -> int:
    port = int(text)
    if not 0 <= port <= 65535:
        raise ValueError(f"not a port: {text}")
    return port


def parse_positive_int(text: str | int) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1: {text}")
    return value


def parse_seconds(text: str | float) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise ValueError(f"must be a positive number of seconds: {text}")
    return value


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_DURATION_FACTORS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | float) -> float:
    """Seconds from `30d`, `12h`, `15m`, `45s` or a plain number of seconds."""
    if isinstance(text, int | float):
        value = float(text)
    else:
        match = _DURATION_RE.match(text)
        if not match:
            raise ValueError(f"not a duration: {text!r} (use 30d, 12h, 15m, 45s)")
        value = float(match.group(1)) * _DURATION_FACTORS[match.group(2)]
    if value <= 0:
        raise ValueError(f"a duration must be positive: {text!r}")
    return value


def _http_url(text: str, what: str) -> URL:
    url = URL(text.strip())
    if url.scheme not in {"http", "https"} or not url.host:
        raise ValueError(f"not an http(s) {what}: {text!r}")
    return url


def parse_proxy_url(text: str) -> URL:
    return _http_url(text, "proxy URL")


def _size_within(text: str | int, low: int, high: int, refusal: str) -> int:
    value = parse_size(text)
    if not low <= value <= high:
        raise ValueError(f"{refusal}: {text}")
    return value


def parse_chunk_size(text: str | int) -> int:
    return _size_within(text, 4096, 16 * 1024 * 1024, "chunk size must be between 4k and 16M")


S3_MIN_PART = 5 * 1024**2
S3_MAX_PART = 4 * 1024**3  # a part may overshoot by a chunk; S3 takes 5 GiB at most


def parse_part_size(text: str | int) -> int:
    """S3 refuses parts under 5 MiB (except the last) and over 5 GiB."""
    return _size_within(text, S3_MIN_PART, S3_MAX_PART, "S3 part size must be between 5M and 4G")


def parse_endpoint(text: str) -> str:
    return str(_http_url(text, "endpoint URL"))


def parse_log_level(text: str) -> str:
    level = text.strip().lower()
    if level not in {"debug", "info", "warning", "error"}:
        raise ValueError(f"not a log level: {text!r} (debug, info, warning or error)")
    return level


def parse_clamd_address(text: str) -> ClamdAddress:
    return ClamdAddress.parse(text)


def parse_log_format(text: str) -> str:
    value = text.strip().lower()
    if value not in {"text", "json"}:
        raise ValueError(f"not a log format: {text!r} (text or json)")
    return value


def parse_secret(text: str) -> str:
    if len(text) < 16:
        raise ValueError("a signing key needs at least 16 characters")
    return text


@dataclass(frozen=True)
class Option:
    """One setting: its flag, how to parse a value, and what it means."""

    name: str
    parse: Callable[[Any], Any]
    help: str
    repeatable: bool = False
    flag_only: bool = False  # a switch: `--compat-status` sets True
    negated: bool = False  # a switch for a setting that is on by default: `--no-ui` sets False
    metavar: str | None = None

    @property
    def flag(self) -> str:
        prefix = "--no-" if self.negated else "--"
        return prefix + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()


OPTIONS: tuple[Option, ...] = (
    Option("host", str, "address to listen on", metavar="ADDR"),
    Option("port", parse_port, "port to listen on", metavar="PORT"),
    Option("storage", str, "a directory, or s3://bucket/prefix", metavar="DIR_OR_URL"),
    Option("max_size", parse_size, "size cap per file (5M, 2G, ...)", metavar="BYTES"),
    Option(
        "allow_type",
        parse_type_rule,
        "allow only these types: image/png, image/*, or .pdf (repeatable)",
        repeatable=True,
        metavar="T",
    ),
    Option(
        "deny_type",
        parse_type_rule,
        "refuse these types: image/svg+xml, text/*, or .exe (repeatable)",
        repeatable=True,
        metavar="T",
    ),
    Option("public_url", parse_public_url, "base of the url returned by uploads", metavar="URL"),
    Option("base_path", parse_base_path, "prefix of every route (/media)", metavar="PATH"),
    Option(
        "api_key",
        str,
        "require Authorization: Bearer KEY for uploads and stat (repeatable)",
        repeatable=True,
        metavar="KEY",
    ),
    Option(
        "cors_origin",
        parse_cors_origin,
        "let pages from this origin call the service from a browser: https://chat.example, "
        "or * for any (repeatable)",
        repeatable=True,
        metavar="ORIGIN",
    ),
    Option(
        "max_transfers",
        parse_positive_int,
        "transfers in flight before 503 busy",
        metavar="N",
    ),
    Option(
        "workers",
        parse_positive_int,
        "worker processes sharing the port with SO_REUSEPORT (default 1)",
        metavar="N",
    ),
    Option(
        "compat_status",
        parse_bool,
        "answer every 4xx of the upload routes with 404, as Hybrid Chat documents",
        flag_only=True,
    ),
    Option(
        "fsync",
        parse_bool,
        "flush each file to disk before answering 200 (default true)",
        metavar="BOOL",
    ),
    Option(
        "chunk_size",
        parse_chunk_size,
        "bytes handed to storage per write (default 512k)",
        metavar="BYTES",
    ),
    Option(
        "cache_size",
        parse_size,
        "memory for local files' metadata and copies of small (<= 64k) ones, per process "
        "(default 32M; 0: none)",
        metavar="BYTES",
    ),
    Option(
        "client_timeout",
        parse_seconds,
        "seconds an upload may go without receiving a byte before it is dropped",
        metavar="SECONDS",
    ),
    Option(
        "shutdown_timeout",
        parse_seconds,
        "seconds transfers in flight may take to finish after SIGTERM",
        metavar="SECONDS",
    ),
    Option(
        "fetch_allow",
        parse_allow_rule,
        "let URL imports reach this refused network or host: 10.0.0.0/8, media.internal "
        "(repeatable)",
        repeatable=True,
        metavar="NET_OR_HOST",
    ),
    Option(
        "fetch_timeout",
        parse_seconds,
        "total seconds a URL import may take (default 300)",
        metavar="SECONDS",
    ),
    Option(
        "fetch_connect_timeout",
        parse_seconds,
        "seconds to resolve and connect to a URL import's source (default 10)",
        metavar="SECONDS",
    ),
    Option(
        "fetch_read_timeout",
        parse_seconds,
        "seconds a URL import's source may send nothing, before and during the body (default 30)",
        metavar="SECONDS",
    ),
    Option(
        "fetch_proxy",
        parse_proxy_url,
        "send URL imports through this HTTP proxy (proxy variables of the environment "
        "are never used)",
        metavar="URL",
    ),
    Option(
        "retention",
        parse_duration,
        "delete stored files older than this (30d, 12h); default: keep forever",
        metavar="DURATION",
    ),
    Option(
        "stale_after",
        parse_duration,
        "remove unfinished temporaries and uploads older than this (default 24h)",
        metavar="DURATION",
    ),
    Option(
        "signing_key",
        parse_secret,
        "sign download links with this key; unsigned or expired links get 403 "
        "(repeatable: the first signs, all verify)",
        repeatable=True,
        metavar="KEY",
    ),
    Option(
        "link_ttl",
        parse_duration,
        "how long a signed download link stays valid (default 7d)",
        metavar="DURATION",
    ),
    Option(
        "log_format",
        parse_log_format,
        "text (default) or json, one object per line",
        metavar="FORMAT",
    ),
    Option(
        "clamd",
        parse_clamd_address,
        "scan every upload with clamd at tcp://host:port or a unix socket path",
        metavar="ADDRESS",
    ),
    Option(
        "clamd_fail_open",
        parse_bool,
        "store uploads unscanned when clamd cannot be reached (default: refuse, 503)",
        flag_only=True,
    ),
    Option(
        "clamd_timeout",
        parse_seconds,
        "seconds clamd may take to read a chunk or give its verdict (default 120)",
        metavar="SECONDS",
    ),
    Option("log_level", parse_log_level, "debug, info, warning or error", metavar="LEVEL"),
    Option(
        "s3_endpoint",
        parse_endpoint,
        "S3-compatible endpoint (MinIO, Ceph RGW); default: AWS for the region",
        metavar="URL",
    ),
    Option(
        "s3_region",
        str,
        "S3 region; default: AWS_REGION / AWS_DEFAULT_REGION / the AWS config, else us-east-1",
        metavar="REGION",
    ),
    Option(
        "s3_part_size",
        parse_part_size,
        "S3 multipart part size (default 8M, at least 5M; grows so the cap fits 10,000 parts)",
        metavar="BYTES",
    ),
    Option(
        "ui",
        parse_bool,
        "do not serve the test page at the base path (STREAMPROXY_UI=false)",
        negated=True,
    ),
)

_OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to run; build it with `load_settings` or directly."""

    host: str = "127.0.0.1"
    port: int = 8080
    storage: str = "./data"
    max_size: int = DEFAULT_MAX_SIZE
    allow_type: tuple[TypeRule, ...] = ()
    deny_type: tuple[TypeRule, ...] = ()
    public_url: URL | None = None
    base_path: str = ""
    api_key: tuple[str, ...] = ()
    cors_origin: tuple[str, ...] = ()
    max_transfers: int | None = None
    compat_status: bool = False
    fsync: bool = True
    chunk_size: int = DEFAULT_CHUNK_SIZE
    cache_size: int = 32 * 1024 * 1024
    workers: int = 1
    client_timeout: float = 60.0
    shutdown_timeout: float = 10.0
    fetch_allow: tuple[AllowRule, ...] = ()
    fetch_timeout: float = 300.0
    fetch_connect_timeout: float = 10.0
    fetch_read_timeout: float = 30.0
    fetch_proxy: URL | None = None
    retention: float | None = None
    stale_after: float = 86400.0
    signing_key: tuple[str, ...] = ()
    link_ttl: float = 7 * 86400.0
    log_format: str = "text"
    clamd: ClamdAddress | None = None
    clamd_fail_open: bool = False
    clamd_timeout: float = 120.0
    log_level: str = "info"
    s3_endpoint: str | None = None
    s3_region: str | None = None
    s3_part_size: int = 8 * 1024 * 1024
    ui: bool = True

    # Set by the supervisor of `--workers`, never by users: the storage was prepared
    # (crash leftovers removed) before the workers started; workers share the port.
    storage_prepared: bool = False
    reuse_port: bool = False

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)


def _apply(values: dict[str, Any], source: Mapping[str, Any], origin: str) -> None:
    """Parse raw values from one source into `values`, naming the source on error."""
    for raw_name, raw_value in source.items():
        name = raw_name.replace("-", "_")
        option = _OPTIONS_BY_NAME.get(name)
        if option is None:
            raise SettingsError(f"{origin}: unknown setting {raw_name!r}")
        try:
            if option.repeatable:
                items = raw_value if isinstance(raw_value, list) else [raw_value]
                values[name] = tuple(option.parse(item) for item in items)
            else:
                values[name] = option.parse(raw_value)
        except (TypeError, ValueError) as error:
            raise SettingsError(f"{origin}: {option.flag}: {error}") from None


def _from_environment(environ: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for option in OPTIONS:
        if option.env in environ:
            raw = environ[option.env]
            if option.repeatable:
                found[option.name] = [item.strip() for item in raw.split(",") if item.strip()]
            else:
                found[option.name] = raw
    return found


def _from_config_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as error:
        raise SettingsError(f"--config {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"--config {path}: not valid TOML: {error}") from None
    # Accept both a flat file and one with a [streamproxy] table.
    table = data.get("streamproxy", data)
    if not isinstance(table, dict):
        raise SettingsError(f"--config {path}: [streamproxy] must be a table")
    return dict(table)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare every option on a command-line parser; defaults stay None so sources merge."""
    parser.add_argument("--config", metavar="FILE", help="TOML file holding any of these settings")
    for option in OPTIONS:
        if option.flag_only or option.negated:
            parser.add_argument(
                option.flag,
                dest=option.name,
                action="store_const",
                const=not option.negated,
                help=option.help,
            )
        elif option.repeatable:
            parser.add_argument(
                option.flag, action="append", metavar=option.metavar, help=option.help
            )
        else:
            parser.add_argument(option.flag, metavar=option.metavar, help=option.help)


def load_settings(
    arguments: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge defaults, the config file, the environment and the command line, in that order."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_path = getattr(arguments, "config", None) or environ.get(ENV_PREFIX + "CONFIG")
    if config_path:
        _apply(values, _from_config_file(Path(config_path)), f"config file {config_path}")
    _apply(values, _from_environment(environ), "environment")
    if arguments is not None:
        given = {
            option.name: getattr(arguments, option.name)
            for option in OPTIONS
            if getattr(arguments, option.name, None) is not None
        }
        _apply(values, given, "command line")
    known = {f.name for f in fields(Settings)}
    return Settings(**{name: value for name, value in values.items() if name in known})


def describe_options() -> Sequence[tuple[str, str, str]]:
    """(flag, environment variable, help) for every option, for docs and `--help`."""
    return [(option.flag, option.env, option.help) for option in OPTIONS]
