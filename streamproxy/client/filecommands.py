"""The client commands on a conversation's files: `streamproxy list` and `streamproxy delete`."""

from __future__ import annotations

import argparse
from collections.abc import Awaitable, Callable
from typing import Any

from .errors import MediaError
from .media_client import MediaClient
from .output import FAILED, OK, Command, Output, UsageError, human_size


def add_file_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Declare `list` and `delete` on the `streamproxy` parser's subparsers."""
    listing = commands.add_parser(
        "list",
        parents=[common],
        help="list a conversation's files",
        description="List a conversation's files, newest first (GET /files, every page).",
    )
    listing.add_argument("--conversation-id", required=True, metavar="ID")
    listing.add_argument("--page-size", type=int, metavar="N", help="files per request (1-1000)")
    delete = commands.add_parser(
        "delete",
        parents=[common],
        help="delete files, or erase a conversation's",
        description="Delete stored files by name, or all of a conversation's files "
        "(DELETE /files); the service must have an API key configured.",
    )
    delete.add_argument("names", nargs="*", metavar="NAME")
    delete.add_argument("--conversation-id", metavar="ID", help="erase this conversation instead")


class List(Command):
    def prepare(self, arguments: argparse.Namespace) -> Callable[[MediaClient], Awaitable[int]]:
        output = Output(arguments)

        async def listing(client: MediaClient) -> int:
            try:
                async for found in client.list_files(
                    arguments.conversation_id, page_size=arguments.page_size
                ):
                    created = found.created.isoformat() if found.created else "-"
                    size = human_size(found.size)
                    output.result(found.to_json(), f"{found.name}\t{size}\t{found.type}\t{created}")
            except MediaError as error:
                output.failure(error, arguments.conversation_id)
                return FAILED
            return OK

        return listing


class Delete(Command):
    def prepare(self, arguments: argparse.Namespace) -> Callable[[MediaClient], Awaitable[int]]:
        conversation, names = arguments.conversation_id, list(arguments.names)
        if bool(conversation) == bool(names):
            raise UsageError("give file names or --conversation-id, not both or neither")
        output = Output(arguments)

        async def delete(client: MediaClient) -> int:
            failed = 0
            for name in names:
                try:
                    await client.delete(name)
                    output.result({"name": name, "deleted": True}, f"deleted {name}")
                except MediaError as error:
                    failed += 1
                    output.failure(error, name, name=name)
            if conversation:
                try:
                    count = await client.delete_conversation(conversation)
                    document = {"conversationId": conversation, "deleted": count}
                    output.result(document, f"deleted {count} files of {conversation}")
                except MediaError as error:
                    failed += 1
                    output.failure(error, conversation, conversationId=conversation)
            return FAILED if failed else OK

        return delete
