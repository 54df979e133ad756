"""The `Settings` dataclass: each setting declared once, as a field with its metadata.

A field's `setting(default, parser, help)` is the whole declaration: the flag
(`--max-size`), the variable (`STREAMPROXY_MAX_SIZE`), the TOML key (`max-size` or
`max_size`) and the default shown in `serve --help` are all derived from it
(`OPTIONS`), so no name or default is written twice. A tuple default makes a
setting repeatable; `switch=True` makes a flag without a value (`--compat-status`,
or `--no-ui` for one that is on by default).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any, TypeVar

from aiohttp import web
from yarl import URL

from ...fetch.safety import AllowRule, parse_allow_rule
from ...http.cors import parse_cors_origin
from ...intake.mediatypes import TypeRule, parse_type_rule
from ...intake.scan import ClamdAddress
from .parsers import (
    format_duration,
    format_size,
    parse_base_path,
    parse_bool,
    parse_chunk_size,
    parse_clamd_address,
    parse_duration,
    parse_endpoint,
    parse_head_size,
    parse_log_format,
    parse_log_level,
    parse_max_size,
    parse_part_size,
    parse_port,
    parse_positive_int,
    parse_proxy_url,
    parse_public_url,
    parse_seconds,
    parse_secret,
    parse_size,
    parse_storage,
    parse_webhook_secret,
    parse_webhook_url,
)

ENV_PREFIX = "STREAMPROXY_"
DEFAULT_MAX_SIZE = 5 * 1024 * 1024

# Bytes per trip to storage (a write batch, a chunk read back). With aiohttp's read
# buffer (server.READ_BUFFER) and WRITES_IN_FLIGHT batches this sets an upload's
# memory; 256 KiB saved ~0.3 MiB per upload but was 15-20% slower (RESULTS.md).
DEFAULT_CHUNK_SIZE = 512 * 1024

_T = TypeVar("_T")
_SPEC = "streamproxy.setting"


@dataclass(frozen=True)
class _Spec:
    parse: Callable[[Any], Any]
    help: str
    metavar: str | None
    switch: bool
    show: Callable[[Any], str] | None
    default_text: str | None


def setting(
    default: _T,
    parse: Callable[[Any], Any],
    help: str,
    *,
    metavar: str | None = None,
    switch: bool = False,
    show: Callable[[Any], str] | None = None,
    default_text: str | None = None,
) -> _T:
    """Declare a field as a setting. `show` spells the default for `--help` (`5M`, not
    5242880); `default_text` describes a default that is no value (`unlimited`)."""
    spec = _Spec(parse, help, metavar, switch, show, default_text)
    return field(default=default, metadata={_SPEC: spec})


@dataclass(frozen=True)
class Settings:
    """Everything the service needs to run; build it with `load_settings` or directly."""

    host: str = setting("127.0.0.1", str, "address to listen on", metavar="ADDR")
    port: int = setting(8080, parse_port, "port to listen on; 0 picks a free one", metavar="PORT")
    storage: str = setting(
        "./data", parse_storage, "a directory, or s3://bucket/prefix", metavar="DIR_OR_URL"
    )
    max_size: int = setting(
        DEFAULT_MAX_SIZE,
        parse_max_size,
        "size cap per file: 5M, 2G, ...",
        metavar="BYTES",
        show=format_size,
    )
    allow_type: tuple[TypeRule, ...] = setting(
        (),
        parse_type_rule,
        "allow only these types: image/png, image/*, or .pdf (repeatable)",
        metavar="T",
    )
    deny_type: tuple[TypeRule, ...] = setting(
        (),
        parse_type_rule,
        "refuse these types: image/svg+xml, text/*, or .exe (repeatable)",
        metavar="T",
    )
    public_url: URL | None = setting(
        None,
        parse_public_url,
        "base of the url returned by uploads",
        metavar="URL",
        default_text="the request's origin",
    )
    base_path: str = setting("", parse_base_path, "prefix of every route (/media)", metavar="PATH")
    api_key: tuple[str, ...] = setting(
        (),
        str,
        "require Authorization: Bearer KEY for uploads and stat (repeatable)",
        metavar="KEY",
    )
    max_transfers: int | None = setting(
        None,
        parse_positive_int,
        "transfers in flight before 503 busy",
        metavar="N",
        default_text="unlimited",
    )
    compat_status: bool = setting(
        False,
        parse_bool,
        "answer every 4xx of the upload routes with 404, as Hybrid Chat documents",
        switch=True,
    )
    fsync: bool = setting(
        True, parse_bool, "flush each file to disk before answering 200", metavar="BOOL"
    )
    chunk_size: int = setting(
        DEFAULT_CHUNK_SIZE,
        parse_chunk_size,
        "bytes handed to storage per write, 4k to 16M",
        metavar="BYTES",
        show=format_size,
    )
    cache_size: int = setting(
        32 * 1024 * 1024,
        parse_size,
        "memory per process for local files' metadata and copies of small (<= 64k) ones; 0: none",
        metavar="BYTES",
        show=format_size,
    )
    workers: int = setting(
        1,
        parse_positive_int,
        "worker processes sharing the port with SO_REUSEPORT",
        metavar="N",
    )
    client_timeout: float = setting(
        60.0,
        parse_seconds,
        "seconds an upload may go without receiving a byte before it is dropped",
        metavar="SECONDS",
    )
    header_timeout: float = setting(
        15.0,
        parse_seconds,
        "seconds the whole request head (request line and headers) may take to arrive",
        metavar="SECONDS",
    )
    keepalive_timeout: float = setting(
        75.0,
        parse_seconds,
        "seconds an idle keep-alive connection stays open",
        metavar="SECONDS",
    )
    max_head_size: int = setting(
        32 * 1024,
        parse_head_size,
        "largest request head in all (request line and headers); a larger one gets 431",
        metavar="BYTES",
        show=format_size,
    )
    shutdown_timeout: float = setting(
        10.0,
        parse_seconds,
        "seconds transfers in flight may take to finish after SIGTERM",
        metavar="SECONDS",
    )
    fetch_allow: tuple[AllowRule, ...] = setting(
        (),
        parse_allow_rule,
        "let URL imports reach this refused network or host: 10.0.0.0/8, media.internal "
        "(repeatable)",
        metavar="NET_OR_HOST",
    )
    fetch_timeout: float = setting(
        300.0, parse_seconds, "total seconds a URL import may take", metavar="SECONDS"
    )
    fetch_connect_timeout: float = setting(
        10.0,
        parse_seconds,
        "seconds to resolve and connect to a URL import's source",
        metavar="SECONDS",
    )
    fetch_read_timeout: float = setting(
        30.0,
        parse_seconds,
        "seconds a URL import's source may send nothing, before and during the body",
        metavar="SECONDS",
    )
    fetch_proxy: URL | None = setting(
        None,
        parse_proxy_url,
        "send URL imports through this HTTP proxy (proxy variables of the environment "
        "are never used)",
        metavar="URL",
    )
    retention: float | None = setting(
        None,
        parse_duration,
        "delete stored files older than this: 30d, 12h",
        metavar="DURATION",
        default_text="keep forever",
    )
    stale_after: float = setting(
        86400.0,
        parse_duration,
        "remove unfinished temporaries and uploads older than this",
        metavar="DURATION",
        show=format_duration,
    )
    upload_expiry: float = setting(
        86400.0,
        parse_duration,
        "an unfinished resumable upload expires this long after its last write",
        metavar="DURATION",
        show=format_duration,
    )
    upload_lease: float = setting(
        60.0,
        parse_duration,
        "on S3, how long a resumable upload's writer holds it without renewing: an upload "
        "whose instance died waits this long before another instance may take it",
        metavar="DURATION",
        show=format_duration,
    )
    signing_key: tuple[str, ...] = setting(
        (),
        parse_secret,
        "sign download links with this key; unsigned or expired links get 403 "
        "(repeatable: the first signs, all verify); also enables upload links",
        metavar="KEY",
    )
    cors_origin: tuple[str, ...] = setting(
        (),
        parse_cors_origin,
        "let pages from this origin call the service from a browser: https://chat.example, "
        "or * for any (repeatable)",
        metavar="ORIGIN",
    )
    link_ttl: float = setting(
        7 * 86400.0,
        parse_duration,
        "how long a signed download link stays valid",
        metavar="DURATION",
        show=format_duration,
    )
    webhook: tuple[str, ...] = setting(
        (),
        parse_webhook_url,
        "POST JSON events (file.stored, file.refused, file.deleted, upload.expired) to this "
        "URL, retried for 24h (repeatable)",
        metavar="URL",
    )
    webhook_secret: str | None = setting(
        None,
        parse_webhook_secret,
        "sign every event with HMAC-SHA256 of this key: header Streamproxy-Signature",
        metavar="KEY",
    )
    log_format: str = setting(
        "text", parse_log_format, "text, or json: one object per line", metavar="FORMAT"
    )
    clamd: ClamdAddress | None = setting(
        None,
        parse_clamd_address,
        "scan every upload with clamd at tcp://host:port or a unix socket path",
        metavar="ADDRESS",
    )
    clamd_fail_open: bool = setting(
        False,
        parse_bool,
        "store uploads unscanned when clamd cannot be reached, instead of refusing them with 503",
        switch=True,
    )
    clamd_timeout: float = setting(
        120.0,
        parse_seconds,
        "seconds clamd may take to read a chunk or give its verdict",
        metavar="SECONDS",
    )
    log_level: str = setting(
        "info", parse_log_level, "debug, info, warning or error", metavar="LEVEL"
    )
    s3_endpoint: str | None = setting(
        None,
        parse_endpoint,
        "endpoint of an S3-compatible server: MinIO, Ceph RGW",
        metavar="URL",
        default_text="AWS for the region",
    )
    s3_region: str | None = setting(
        None,
        str,
        "S3 region",
        metavar="REGION",
        default_text="AWS_REGION / AWS_DEFAULT_REGION / the AWS config, else us-east-1",
    )
    s3_part_size: int = setting(
        8 * 1024 * 1024,
        parse_part_size,
        "S3 multipart part size, 5M to 4G; grown so the cap fits in 10,000 parts",
        metavar="BYTES",
        show=format_size,
    )
    ui: bool = setting(
        True,
        parse_bool,
        "do not serve the test page at the base path (STREAMPROXY_UI=false)",
        switch=True,
    )

    # Set by the supervisor of `--workers`, never by users: the storage was prepared
    # (crash leftovers removed) before the workers started; workers share the port.
    storage_prepared: bool = False
    reuse_port: bool = False
    # Set by tests: on S3, claim names first (storage.s3nameclaim) even where the server
    # honours If-None-Match on CompleteMultipartUpload, as moto's does.
    s3_claims: bool = False

    def with_overrides(self, **changes: Any) -> Settings:
        return replace(self, **changes)


SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)


@dataclass(frozen=True)
class Option:
    """One setting as the outside sees it, derived from its `Settings` field."""

    name: str
    parse: Callable[[Any], Any]
    help: str
    default: Any
    metavar: str | None = None
    switch: bool = False
    shown_default: str | None = None

    @property
    def repeatable(self) -> bool:
        return isinstance(self.default, tuple)

    @property
    def negated(self) -> bool:
        """A switch for a setting that is on by default: `--no-ui` turns it off."""
        return self.switch and self.default is True

    @property
    def flag(self) -> str:
        prefix = "--no-" if self.negated else "--"
        return prefix + self.name.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.name.upper()

    @property
    def help_with_default(self) -> str:
        if self.shown_default is None:
            return self.help
        return f"{self.help} (default: {self.shown_default})"


def _shown_default(default: Any, spec: _Spec) -> str | None:
    if spec.default_text is not None:
        return spec.default_text
    if spec.switch or default is None or default in ((), ""):
        return None
    if spec.show is not None:
        return spec.show(default)
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def _options() -> tuple[Option, ...]:
    options = []
    for item in fields(Settings):
        spec = item.metadata.get(_SPEC)
        if isinstance(spec, _Spec):
            options.append(
                Option(
                    name=item.name,
                    parse=spec.parse,
                    help=spec.help,
                    default=item.default,
                    metavar=spec.metavar,
                    switch=spec.switch,
                    shown_default=_shown_default(item.default, spec),
                )
            )
    return tuple(options)


OPTIONS: tuple[Option, ...] = _options()
OPTIONS_BY_NAME = {option.name: option for option in OPTIONS}
