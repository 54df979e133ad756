"""Where settings come from: flags, `STREAMPROXY_*` variables and a TOML file.

Precedence: command line > environment > config file > default. A bad value is
reported under the name it was given by (`--port`, `STREAMPROXY_PORT`, or the
file's key), since that is the place to fix it. An unknown key in the file is
an error; an unknown `STREAMPROXY_*` variable only a warning (the environment
is shared with other programs), naming the closest setting.
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import tomllib
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from .model import ENV_PREFIX, OPTIONS, OPTIONS_BY_NAME, Option, Settings


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names the setting."""


log = logging.getLogger("streamproxy.settings")

CONFIG_VARIABLE = ENV_PREFIX + "CONFIG"
# Variables of this prefix that are not settings of the service: the config file's,
# and the client commands' (streamproxy.client.commands).
OTHER_VARIABLES = frozenset({CONFIG_VARIABLE, ENV_PREFIX + "SERVER", ENV_PREFIX + "CLIENT_API_KEY"})
KNOWN_VARIABLES = frozenset(option.env for option in OPTIONS) | OTHER_VARIABLES


def _as_text(raw: Any) -> str:
    """A TOML value as the text a flag would carry; lists and tables are refused."""
    if isinstance(raw, str):
        return raw
    if isinstance(raw, bool):
        return "true" if raw else "false"
    if isinstance(raw, int | float):
        return str(raw)
    raise ValueError(f"needs a single value, not {raw!r}")


def _parse(option: Option, raw: Any, label: str) -> Any:
    try:
        if option.repeatable:
            items = raw if isinstance(raw, list) else [raw]
            return tuple(option.parse(_as_text(item)) for item in items)
        return option.parse(_as_text(raw))
    except (TypeError, ValueError) as error:
        raise SettingsError(f"{label}: {error}") from None


def _closest(name: str, candidates: Collection[str], prefix: str = "") -> str:
    """` (did you mean PREFIX+closest?)`, or nothing when no candidate is close."""
    match = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean {prefix}{match[0]}?)" if match else ""


def _from_config_file(path: Path, label: str) -> Iterator[tuple[Option, Any, str]]:
    try:
        with path.open("rb") as file:
            data = tomllib.load(file)
    except OSError as error:
        raise SettingsError(f"{label} {path}: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise SettingsError(f"{label} {path}: not valid TOML: {error}") from None
    # Accept both a flat file and one with a [streamproxy] table.
    table = data.get("streamproxy", data)
    if not isinstance(table, dict):
        raise SettingsError(f"{label} {path}: [streamproxy] must be a table")
    for key, raw in table.items():
        option = OPTIONS_BY_NAME.get(key.replace("-", "_"))
        if option is None:
            hint = _closest(key.replace("-", "_"), OPTIONS_BY_NAME)
            raise SettingsError(f"config file {path}: unknown setting {key!r}{hint}")
        yield option, raw, f"config file {path}: {key}"


def _from_environment(environ: Mapping[str, str]) -> Iterator[tuple[Option, Any, str]]:
    for option in OPTIONS:
        if option.env in environ:
            raw: Any = environ[option.env]
            if option.repeatable:
                raw = [item.strip() for item in raw.split(",") if item.strip()]
            yield option, raw, option.env


def _from_arguments(arguments: argparse.Namespace) -> Iterator[tuple[Option, Any, str]]:
    for option in OPTIONS:
        raw = getattr(arguments, option.name, None)
        if raw is not None:
            yield option, raw, option.flag


def warn_unknown_variables(environ: Mapping[str, str]) -> list[str]:
    """Log (and return) a warning for each `STREAMPROXY_*` variable that is no setting."""
    suffixes = [name.removeprefix(ENV_PREFIX) for name in KNOWN_VARIABLES]
    warnings = []
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in KNOWN_VARIABLES:
            hint = _closest(name.removeprefix(ENV_PREFIX), suffixes, ENV_PREFIX)
            warnings.append(f"{name} is not a setting and is ignored{hint}")
    for warning in warnings:
        log.warning("%s", warning)
    return warnings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare every option on a command-line parser; defaults stay None so sources merge."""
    parser.add_argument("--config", metavar="FILE", help="TOML file holding any of these settings")
    for option in OPTIONS:
        if option.switch:
            parser.add_argument(
                option.flag,
                dest=option.name,
                action="store_const",
                const=not option.negated,
                help=option.help_with_default,
            )
        elif option.repeatable:
            parser.add_argument(
                option.flag,
                action="append",
                metavar=option.metavar,
                help=option.help_with_default,
            )
        else:
            parser.add_argument(option.flag, metavar=option.metavar, help=option.help_with_default)


def load_settings(
    arguments: argparse.Namespace | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge defaults, the config file, the environment and the command line, in that order."""
    environ = os.environ if environ is None else environ
    warn_unknown_variables(environ)
    sources: list[Iterator[tuple[Option, Any, str]]] = []
    config_path = getattr(arguments, "config", None)
    if config_path:
        sources.append(_from_config_file(Path(config_path), "--config"))
    elif environ.get(CONFIG_VARIABLE):
        sources.append(_from_config_file(Path(environ[CONFIG_VARIABLE]), CONFIG_VARIABLE))
    sources.append(_from_environment(environ))
    if arguments is not None:
        sources.append(_from_arguments(arguments))
    values: dict[str, Any] = {}
    for source in sources:
        for option, raw, label in source:
            values[option.name] = _parse(option, raw, label)
    return Settings(**values)


def describe_options() -> Sequence[tuple[str, str, str]]:
    """(flag, environment variable, help) for every option, for docs and `--help`."""
    return [(option.flag, option.env, option.help_with_default) for option in OPTIONS]
