"""The client commands: `streamproxy upload | fetch | download | stat | message | list |
delete | upload-link`.

Each talks to a running service (`--server`, or STREAMPROXY_SERVER) through
`MediaClient`. Results go to stdout, as text or, with `--json`, one JSON object
per line; problems go to stderr. Exit codes: 0 success, 1 the service refused
or the transfer failed, 2 the command line cannot be carried out (bad options,
a file that cannot be read), 130 interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .downloads import range_header, safe_local_name
from .errors import MediaError
from .filecommands import Delete, List, add_file_commands
from .linkcommands import IssueUploadLink, add_link_command
from .media_client import MediaClient, parse_server
from .output import FAILED, INTERRUPTED, OK, USAGE, Command, Output, UsageError, human_size
from .progress import TransferBar, wanted
from .results import DownloadResult, FileStat, UploadResult

SERVER_ENV = "STREAMPROXY_SERVER"
# Not STREAMPROXY_API_KEY: that one lists the keys a server accepts (comma-separated).
KEY_ENV = "STREAMPROXY_CLIENT_API_KEY"
DEFAULT_SERVER = "http://127.0.0.1:8080"

COMMANDS = ("upload", "fetch", "download", "stat", "message", "list", "delete", "upload-link")


def add_client_commands(commands: Any) -> None:
    """Declare the client subcommands on the `streamproxy` parser's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--server",
        metavar="URL",
        help=f"the service's base URL, base path included (${SERVER_ENV}; {DEFAULT_SERVER})",
    )
    common.add_argument(
        "--api-key",
        metavar="KEY",
        help=f"send Authorization: Bearer KEY (${KEY_ENV})",
    )
    common.add_argument(
        "--json", action="store_true", help="print results as JSON, one object per line"
    )
    transfer = argparse.ArgumentParser(add_help=False)
    transfer.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bars on stderr (default: on a terminal, and not with --json)",
    )

    upload = commands.add_parser(
        "upload",
        parents=[common, transfer],
        help="upload files",
        description="Upload files (streamed from disk) and print each one's name, "
        "URL and media message.",
    )
    upload.add_argument("files", nargs="+", metavar="FILE")
    upload.add_argument("--conversation-id", required=True, metavar="ID")
    upload.add_argument("--mime-type", metavar="TYPE", help="declared type (default: sniffed)")
    upload.add_argument("--caption", help="caption of the media message")

    fetch = commands.add_parser(
        "fetch",
        parents=[common],
        help="have the service fetch a URL and store it",
        description="Ask the service to import a file from a URL (POST /files/from-url).",
    )
    fetch.add_argument("url", metavar="URL")
    fetch.add_argument("--channel", required=True, help="the conversation's channel: whatsapp, web")
    fetch.add_argument("--conversation-id", metavar="ID")
    fetch.add_argument("--file-name", metavar="NAME")
    fetch.add_argument("--mime-type", metavar="TYPE")
    fetch.add_argument("--sha256", metavar="HEX", help="expected SHA-256 of the content")
    fetch.add_argument("--oauth-token", metavar="TOKEN", help="bearer token for the source")
    fetch.add_argument("--api-key-360", metavar="KEY", help="360dialog key for the source")
    fetch.add_argument("--caption", help="caption of the media message")

    download = commands.add_parser(
        "download",
        parents=[common, transfer],
        help="download a stored file",
        description="Download a stored file; an interrupted download resumes where "
        "it stopped (Range + If-Range), and the result is checked against the ETag.",
    )
    download.add_argument("name", metavar="NAME_OR_URL")
    download.add_argument("-o", "--output", metavar="PATH", help="where to save (default: NAME)")
    download.add_argument(
        "--range", metavar="RANGE", help="only these bytes: START-END, START- or -SUFFIX"
    )
    download.add_argument(
        "--no-resume",
        dest="resume",
        action="store_false",
        help="start afresh even if PATH holds part of the file",
    )

    stat = commands.add_parser(
        "stat",
        parents=[common],
        help="show a stored file's metadata",
        description="Show a stored file's metadata (GET /files/stat).",
    )
    stat.add_argument("name", metavar="NAME")

    message = commands.add_parser(
        "message",
        parents=[common],
        help="print the media message for a stored file",
        description="Print Hybrid Chat's media message body for a stored file.",
    )
    message.add_argument("name", metavar="NAME")
    message.add_argument("--caption")
    add_file_commands(commands, common)
    add_link_command(commands, common)


def run(arguments: argparse.Namespace) -> int:
    """Run one client command; returns the exit code."""
    try:
        client = _client(arguments)
        handler = _HANDLERS[arguments.command]
        checked = handler.prepare(arguments)
    except UsageError as error:
        print(f"streamproxy {arguments.command}: {error}", file=sys.stderr)
        return USAGE
    try:
        return asyncio.run(_with_client(client, checked))
    except KeyboardInterrupt:
        print(f"streamproxy {arguments.command}: interrupted", file=sys.stderr)
        return INTERRUPTED


async def _with_client(
    client: MediaClient, command: Callable[[MediaClient], Awaitable[int]]
) -> int:
    async with client:
        return await command(client)


def _client(arguments: argparse.Namespace) -> MediaClient:
    server = arguments.server or os.environ.get(SERVER_ENV) or DEFAULT_SERVER
    try:
        parse_server(server)
    except ValueError as error:
        raise UsageError(str(error)) from None
    api_key = arguments.api_key or os.environ.get(KEY_ENV) or None
    return MediaClient(server, api_key=api_key)


def _stored_text(result: UploadResult, source: str) -> str:
    return (
        f"{source} -> {result.name} ({human_size(result.size)}, {result.type}, "
        f"etag {result.etag})\n  {result.url}"
    )


class Upload(Command):
    def prepare(self, arguments: argparse.Namespace) -> Callable[[MediaClient], Awaitable[int]]:
        files = [Path(name) for name in arguments.files]
        for path in files:
            if not path.is_file() or not os.access(path, os.R_OK):
                raise UsageError(f"{path}: not a readable file")
        output = Output(arguments)
        show = wanted(arguments.progress, output.json)

        async def upload(client: MediaClient) -> int:
            failed = 0
            for path in files:
                bar = TransferBar(path.name, enabled=show, forced=bool(arguments.progress))
                async with bar:
                    try:
                        result = await client.upload(
                            path,
                            conversation_id=arguments.conversation_id,
                            mime_type=arguments.mime_type,
                            progress=bar,
                        )
                    except (MediaError, OSError) as error:
                        bar.close()
                        failed += 1
                        output.failure(_as_media_error(error), str(path), file=str(path))
                        continue
                document = {
                    "file": str(path),
                    **result.to_json(),
                    "mediaMessage": client.media_message(result, arguments.caption),
                }
                output.result(document, _stored_text(result, str(path)))
            return FAILED if failed else OK

        return upload


class Fetch(Command):
    def prepare(self, arguments: argparse.Namespace) -> Callable[[MediaClient], Awaitable[int]]:
        output = Output(arguments)

        async def fetch(client: MediaClient) -> int:
            try:
                result = await client.upload_from_url(
                    arguments.url,
                    channel=arguments.channel,
                    conversation_id=arguments.conversation_id,
                    file_name=arguments.file_name,
                    mime_type=arguments.mime_type,
                    sha256=arguments.sha256,
                    oauth_token=arguments.oauth_token,
                    api_key_360=arguments.api_key_360,
                )
            except MediaError as error:
                output.failure(error, arguments.url, sourceUrl=arguments.url)
                return FAILED
            document = {
                "sourceUrl": arguments.url,
                **result.to_json(),
                "mediaMessage": client.media_message(result, arguments.caption),
            }
            output.result(document, _stored_text(result, arguments.url))
            return OK

        return fetch


class Download(Command):
    def prepare(self, arguments: argparse.Namespace) -> Callable[[MediaClient], Awaitable[int]]:
        if arguments.range is not None:
            try:
                range_header(arguments.range)
            except ValueError as error:
                raise UsageError(str(error)) from None
        target = Path(arguments.output) if arguments.output else _default_path(arguments.name)
        if target.is_dir():
            raise UsageError(f"{target} is a directory; give a file path with -o")
        output = Output(arguments)
        show = wanted(arguments.progress, output.json)

        async def download(client: MediaClient) -> int:
            bar = TransferBar(target.name, enabled=show, forced=bool(arguments.progress))
            async with bar:
                try:
                    result = await client.download(
                        arguments.name,
                        target,
                        byte_range=arguments.range,
                        resume=arguments.resume,
                        progress=bar,
                    )
                except (MediaError, OSError) as error:
                    bar.close()
                    output.failure(_as_media_error(error), arguments.name, name=arguments.name)
                    return FAILED
            output.result({"name": arguments.name, **result.to_json()}, _download_text(result))
            return OK

        return download


def _default_path(name: str) -> Path:
    """The stored name in the current directory (from the URL's filename= for a URL)."""
    if "://" in name:
        from yarl import URL

        name = URL(name).query.get("filename", "")
    try:
        return Path(safe_local_name(name))
    except ValueError as error:
        raise UsageError(str(error)) from None


def _download_text(result: DownloadResult) -> str:
    text = f"saved {result.path} ({human_size(result.size)}"
    if result.status is None:
        text += ", already complete"
    elif result.resumed_from:
        text += f", resumed at {human_size(result.resumed_from)}"
    elif result.content_range:
        text += f", {result.content_range}"
    if result.verified:
        text += "; MD5 matches the ETag"
    return text + ")"


def _after_stat(
    arguments: argparse.Namespace, present: Callable[[MediaClient, FileStat, Output], None]
) -> Callable[[MediaClient], Awaitable[int]]:
    """Stat the named file, then present it; a refused stat is the command's failure."""
    output = Output(arguments)

    async def run(client: MediaClient) -> int:
        try:
            found = await client.stat(arguments.name)
        except MediaError as error:
            output.failure(error, arguments.name, name=arguments.name)
            return FAILED
        present(client, found, output)
        return OK

    return run


class Stat(Command):
    def prepare(self, arguments: argparse.Namespace) -> Callable[[MediaClient], Awaitable[int]]:
        def present(client: MediaClient, found: FileStat, output: Output) -> None:
            output.result(found.to_json(), _stat_text(found))

        return _after_stat(arguments, present)


def _stat_text(found: FileStat) -> str:
    rows = [
        ("name", found.name),
        ("type", found.type),
        ("size", f"{found.size} ({human_size(found.size)})"),
        ("etag", found.etag),
        ("created", found.created.isoformat() if found.created else "-"),
        ("conversation", found.conversation_id or "-"),
        ("channel", found.channel or "-"),
        ("original name", found.original_name or "-"),
    ]
    return "\n".join(f"{label + ':':<15}{value}" for label, value in rows)


class Message(Command):
    def prepare(self, arguments: argparse.Namespace) -> Callable[[MediaClient], Awaitable[int]]:
        def present(client: MediaClient, found: FileStat, output: Output) -> None:
            body = client.media_message(found, arguments.caption)
            output.result(body, json.dumps(body, indent=2, ensure_ascii=False))

        return _after_stat(arguments, present)


def _as_media_error(error: MediaError | OSError) -> MediaError:
    if isinstance(error, MediaError):
        return error
    return MediaError(None, "local_file", error.strerror or str(error))


_HANDLERS: dict[str, Command] = {
    "upload": Upload(),
    "fetch": Fetch(),
    "download": Download(),
    "stat": Stat(),
    "message": Message(),
    "list": List(),
    "delete": Delete(),
    "upload-link": IssueUploadLink(),
}
