"""`MediaClient.list_page`, `list_files`, `delete`, `delete_conversation`, and the
`streamproxy list` and `streamproxy delete` commands, against a live service."""

from __future__ import annotations

from typing import Any

import pytest

from streamproxy.client import MediaClient, MediaError

from ..conversations import KEY, fill
from .conftest import Recorded, run_cli


@pytest.fixture
async def keyed(start_recorded: Any) -> Recorded:
    recorded: Recorded = await start_recorded(api_key=(KEY,))
    return recorded


async def test_the_client_lists_pages_and_deletes(keyed: Recorded) -> None:
    names = await fill(keyed.service.session, keyed.url, "c7", 5)
    async with MediaClient(keyed.url, api_key=KEY) as media:
        page, cursor = await media.list_page("c7", limit=2)
        assert len(page) == 2 and cursor is not None
        listed = [found async for found in media.list_files("c7", page_size=2)]
        assert {found.name for found in listed} == names and listed[:2] == page
        assert listed[0].url.startswith(keyed.url + "/files/download?filename=c7_")
        await media.delete(listed[0].name)
        with pytest.raises(MediaError) as missing:
            await media.delete(listed[0].name)
        assert missing.value.status == 404 and missing.value.code == "not_found"
        assert await media.delete_conversation("c7") == 4
        assert await media.delete_conversation("c7") == 0
        assert [found async for found in media.list_files("c7")] == []
    keyed.service.assert_clean(set())


async def test_the_client_without_a_key_hears_why(keyed: Recorded) -> None:
    async with MediaClient(keyed.url) as media:
        with pytest.raises(MediaError) as refused:
            await media.delete_conversation("c7")
    assert refused.value.status == 401


async def test_list_and_delete_commands(keyed: Recorded) -> None:
    names = await fill(keyed.service.session, keyed.url, "c8", 3)
    common = ("--server", keyed.url, "--api-key", KEY)
    listing = await run_cli("list", "--conversation-id", "c8", "--page-size", "2", *common)
    assert listing.code == 0, listing.stderr
    assert {line.split("\t")[0] for line in listing.stdout.splitlines()} == names
    as_json = await run_cli("list", "--conversation-id", "c8", "--json", *common)
    assert {entry["name"] for entry in as_json.json_lines()} == names
    first = sorted(names)[0]
    deleted = await run_cli("delete", first, *common)
    assert (deleted.code, deleted.stdout.strip()) == (0, f"deleted {first}")
    again = await run_cli("delete", first, "--json", *common)
    assert again.code == 1 and again.json_lines()[0]["status"] == 404
    erased = await run_cli("delete", "--conversation-id", "c8", "--json", *common)
    assert erased.code == 0 and erased.json_lines() == [{"conversationId": "c8", "deleted": 2}]
    usage = await run_cli("delete", first, "--conversation-id", "c8", *common)
    assert usage.code == 2 and "not both or neither" in usage.stderr
    keyed.service.assert_clean(set())


async def test_delete_command_on_a_service_without_keys(served: Recorded) -> None:
    run = await run_cli("delete", "--conversation-id", "c9", "--server", served.url)
    assert run.code == 1 and "403 forbidden" in run.stderr and "--api-key" in run.stderr
