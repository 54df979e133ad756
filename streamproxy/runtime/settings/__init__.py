"""Settings: each declared once as a `Settings` field, read from flags, variables and TOML.

`model` declares them (and derives `OPTIONS`), `parsers` checks values, `sources`
reads and merges the command line, the `STREAMPROXY_*` environment and the
`--config` file. Everything importers need is re-exported here.
"""

from __future__ import annotations

from .model import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_MAX_SIZE,
    ENV_PREFIX,
    OPTIONS,
    SETTINGS,
    Option,
    Settings,
    setting,
)
from .parsers import (
    format_duration,
    format_size,
    parse_base_path,
    parse_bool,
    parse_duration,
    parse_http_url,
    parse_port,
    parse_seconds,
    parse_size,
)
from .sources import (
    KNOWN_VARIABLES,
    SettingsError,
    add_arguments,
    describe_options,
    load_settings,
    warn_unknown_variables,
)

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_MAX_SIZE",
    "ENV_PREFIX",
    "KNOWN_VARIABLES",
    "OPTIONS",
    "SETTINGS",
    "Option",
    "Settings",
    "SettingsError",
    "add_arguments",
    "describe_options",
    "format_duration",
    "format_size",
    "load_settings",
    "parse_base_path",
    "parse_bool",
    "parse_duration",
    "parse_http_url",
    "parse_port",
    "parse_seconds",
    "parse_size",
    "setting",
    "warn_unknown_variables",
]
