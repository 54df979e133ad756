"""Helpers for the deletion and listing tests: filling a conversation, reading metrics."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import aiohttp

KEY = "erasure-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


async def upload_to(
    session: aiohttp.ClientSession,
    url: str,
    conversation_id: str,
    filename: str,
    data: bytes = b"x",
) -> dict[str, Any]:
    """One multipart upload with the API key; the upload's JSON answer."""
    form = aiohttp.FormData()
    form.add_field("conversationId", conversation_id)
    form.add_field("file", data, filename=filename, content_type="application/octet-stream")
    async with session.post(url + "/files", data=form, headers=AUTH) as response:
        assert response.status == 200, await response.text()
        answer: dict[str, Any] = await response.json()
        return answer


async def fill(
    session: aiohttp.ClientSession,
    url: str,
    conversation_id: str,
    count: int,
    concurrency: int = 16,
) -> set[str]:
    """Upload `count` small files into a conversation, some at a time; their stored names."""
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int) -> str:
        async with gate:
            data = f"file {index} of {conversation_id}".encode()
            answer = await upload_to(session, url, conversation_id, f"f{index:04d}.txt", data)
            return str(answer["name"])

    return set(await asyncio.gather(*(one(index) for index in range(count))))


async def counter(session: aiohttp.ClientSession, url: str, sample: str) -> float:
    """A sample's value in /metrics (0 when absent), e.g. `x_total{how="file"}`."""
    async with session.get(url + "/metrics") as response:
        text = await response.text()
    match = re.search(rf"^{re.escape(sample)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0
