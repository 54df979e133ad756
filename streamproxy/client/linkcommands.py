"""The client command that issues upload links: `streamproxy upload-link`."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import MediaError
from .media_client import MediaClient
from .output import FAILED, OK, Command, Output


def add_link_command(commands: Any, common: argparse.ArgumentParser) -> None:
    """Declare `upload-link` on the `streamproxy` parser's subparsers."""
    link = commands.add_parser(
        "upload-link",
        parents=[common],
        help="issue a one-time upload link",
        description="Ask for a link that lets someone without the API key upload one "
        "file (POST /files/upload-links; the service needs --signing-key).",
    )
    link.add_argument("--conversation-id", required=True, metavar="ID")
    link.add_argument("--file-name", metavar="NAME", help="the stored file's name")
    link.add_argument("--max-size", metavar="BYTES", type=int, help="default: the service's cap")
    link.add_argument(
        "--allow-type", action="append", default=[], metavar="T",
        help="repeatable: image/*, image/png or .pdf (on top of the service's rules)",
    )  # fmt: skip
    link.add_argument("--expires-in", metavar="SECONDS", type=int, help="default: 3600")


class IssueUploadLink(Command):
    def prepare(self, arguments: argparse.Namespace) -> Callable[[MediaClient], Awaitable[int]]:
        output = Output(arguments)

        async def issue(client: MediaClient) -> int:
            try:
                link = await client.upload_link(
                    conversation_id=arguments.conversation_id,
                    file_name=arguments.file_name,
                    max_size=arguments.max_size,
                    allow_type=arguments.allow_type,
                    expires_in=arguments.expires_in,
                )
            except MediaError as error:
                output.failure(error, "upload link", conversationId=arguments.conversation_id)
                return FAILED
            when = link.expires.strftime("%Y-%m-%d %H:%M:%S UTC")
            output.result(link.to_json(), f"{link.url}\n  one upload, until {when}")
            return OK

        return issue
