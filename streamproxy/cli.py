"""The `streamproxy` command: `serve` runs the service; the client commands talk to one.

`streamproxy serve [flags]` runs the service. `upload`, `fetch`, `download`,
`stat`, `message`, `list`, `delete` and `upload-link` are the connector's side
(see `client/commands.py`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .client.commands import COMMANDS, add_client_commands
from .client.commands import run as run_client
from .runtime.settings import Settings, SettingsError, add_arguments, load_settings
from .storage.base import StorageError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="streamproxy",
        description="Streaming media transfer service for chat platforms, and its client.",
    )
    parser.add_argument("--version", action="version", version=f"streamproxy {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run the service",
        description="Run the service. Every flag is also a STREAMPROXY_* variable "
        "(--max-size is STREAMPROXY_MAX_SIZE) and a key of the --config TOML file "
        "(max-size or max_size). Precedence: flag, variable, file, default.",
    )
    add_arguments(serve)
    add_client_commands(commands)
    for command_parser in commands.choices.values():
        command_parser.set_defaults(command_parser=command_parser)
    return parser


def run(settings: Settings) -> None:
    """Blocking entry point of `serve`: one process, or a supervisor of `--workers` processes.

    It lives here, not in server.py, so that server.py (one process) and workers.py
    (the supervisor, whose workers run server.py) do not import each other. The
    imports wait until `serve` runs: the client commands start without aiohttp's server.
    """
    if settings.workers > 1:
        from .runtime.workers import run_workers

        run_workers(settings)
        return
    from .runtime.logs import configure_logging
    from .runtime.server import run_loop, serve

    configure_logging(settings.log_level, settings.log_format)
    run_loop(serve(settings))


def _parse_arguments(
    parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> argparse.Namespace:
    """Like `parse_args`, but a flag a sub-command does not know is reported with that
    sub-command's usage (`serve --bogus`), not the top-level one."""
    arguments, unknown = parser.parse_known_args(argv)
    if unknown:
        owner: argparse.ArgumentParser = getattr(arguments, "command_parser", parser)
        owner.error(f"unrecognized arguments: {' '.join(unknown)}")
    return arguments


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    arguments = _parse_arguments(parser, argv)
    if arguments.command in COMMANDS:
        return run_client(arguments)
    if arguments.command != "serve":
        parser.print_help()
        return 2
    try:
        settings = load_settings(arguments)
    except SettingsError as error:
        print(f"streamproxy: {error}", file=sys.stderr)
        return 2
    try:
        run(settings)
    except (OSError, SettingsError, StorageError, RuntimeError) as error:
        print(f"streamproxy: cannot start: {error}", file=sys.stderr)
        return 1
    return 0
