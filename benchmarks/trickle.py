"""Slow clients, in a process of their own: N uploads that each trickle at a fixed rate.

Run by the slow-clients scenario as `python -m benchmarks.trickle`, so the fast upload
it measures does not share an event loop with 500 sleeping senders. It prints `ready`
once every upload is connected and has sent its headers, trickles until its standard
input closes, then drops the connections (the servers see clients that went away) and
prints what it sent since `ready`: `sent BYTES SECONDS`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import secrets
import sys
import time
from collections.abc import AsyncIterator

import aiohttp

from .load import BLOCK, multipart_envelope, new_session

PIECE = 16 * 1024


class Trickle:
    def __init__(self, count: int, rate: int, declared: int) -> None:
        self.count = count
        self.interval = PIECE / rate
        self.declared = declared
        self.started = 0
        self.sent = 0
        self.all_started = asyncio.Event()

    async def body(self, head: bytes) -> AsyncIterator[bytes]:
        if head:
            yield head
        self.started += 1
        if self.started == self.count:
            self.all_started.set()
        piece = BLOCK[:PIECE]
        remaining = self.declared
        # Spread the senders over the interval so they do not all wake at once.
        await asyncio.sleep(random.uniform(0, self.interval))
        while remaining > 0:
            yield piece
            self.sent += PIECE
            remaining -= PIECE
            await asyncio.sleep(self.interval)

    async def one(self, session: aiohttp.ClientSession, url: str, multipart: bool) -> None:
        headers = {"Content-Length": str(self.declared)}
        if multipart:
            boundary = "trickle" + secrets.token_hex(12)
            head, tail = multipart_envelope(f"slow-{secrets.token_hex(4)}.bin", boundary)
            headers = {
                "Content-Type": f"multipart/form-data; boundary={boundary}",
                "Content-Length": str(len(head) + self.declared + len(tail)),
            }
            method = "POST"
        else:
            head = b""
            method = "PUT"
            url = url.replace("{name}", f"slow-{secrets.token_hex(6)}.bin")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.request(method, url, headers=headers, data=self.body(head)) as r:
                await r.read()


async def main_async(arguments: argparse.Namespace) -> None:
    trickle = Trickle(arguments.count, arguments.rate, arguments.declared)
    async with new_session() as session:
        tasks = [
            asyncio.create_task(trickle.one(session, arguments.url, arguments.multipart))
            for _ in range(arguments.count)
        ]
        try:
            await asyncio.wait_for(trickle.all_started.wait(), 60)
            print(f"ready {trickle.started}", flush=True)
        except TimeoutError:
            print(f"ready {trickle.started} (of {arguments.count})", flush=True)
        sent_at_ready, ready_at = trickle.sent, time.perf_counter()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, sys.stdin.read)  # until the harness closes it
        sent, seconds = trickle.sent - sent_at_ready, time.perf_counter() - ready_at
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    print(f"sent {sent} {seconds:.3f}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True, help="upload URL; {name} is replaced for PUT")
    parser.add_argument("--multipart", action="store_true")
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rate", type=int, default=64 * 1024, help="bytes per second each")
    parser.add_argument("--declared", type=int, default=64 * 1024 * 1024)
    arguments = parser.parse_args()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        runner.run(main_async(arguments))


if __name__ == "__main__":
    main()
