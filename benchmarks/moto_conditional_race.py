"""Does moto's server make conditional PutObject atomic? The figures behind the moto note
in streamproxy/resumable/s3store.py.

Run as `python -m benchmarks.moto_conditional_race [--writers 4] [--rounds 200]
[--switch-interval 0.005]`. Each round, `writers` threads (one boto3 client each) race
one PutObject on a fresh key, all with `If-None-Match: *` (the key is new) or all with
`If-Match: <its ETag>` (the key exists): an atomic server lets exactly one win. moto
checks the condition and then writes, without a lock, on werkzeug's threads, so two can
win when the server's interpreter switches threads between the check and the write;
`--switch-interval` (sys.setswitchinterval in moto's process) makes that likelier.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from tests.s3support import BUCKET, FAKE_AWS, MotoServer, free_port


def start_moto(switch_interval: float, log: Path) -> MotoServer:
    port = free_port()
    code = (
        f"import sys; sys.setswitchinterval({switch_interval}); "
        "from moto.server import main; main()"
    )
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-c", code, "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    server = MotoServer(port, process)
    server._wait_until_up()
    server.client.create_bucket(Bucket=BUCKET)
    return server


def race(clients: list[Any], key: str, condition: dict[str, str]) -> int:
    """How many of the racing conditional writes succeeded."""
    barrier = threading.Barrier(len(clients))
    wins: list[int] = []

    def write(index: int) -> None:
        barrier.wait()
        try:
            clients[index].put_object(
                Bucket=BUCKET, Key=key, Body=f"writer {index}".encode(), **condition
            )
            wins.append(index)
        except ClientError as error:
            if error.response["ResponseMetadata"]["HTTPStatusCode"] not in (409, 412):
                raise

    threads = [threading.Thread(target=write, args=(i,)) for i in range(len(clients))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return len(wins)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--switch-interval", type=float, default=0.005)
    arguments = parser.parse_args()
    os.environ.update(FAKE_AWS)
    with tempfile.TemporaryDirectory() as scratch:
        server = start_moto(arguments.switch_interval, Path(scratch) / "moto.log")
        try:
            config = Config(s3={"addressing_style": "path"})
            clients = [
                boto3.client("s3", endpoint_url=server.endpoint, config=config)
                for _ in range(arguments.writers)
            ]
            for mode in ("If-None-Match", "If-Match"):
                winners: Counter[int] = Counter()
                for number in range(arguments.rounds):
                    key = f"race/{mode}/{number}"
                    if mode == "If-None-Match":
                        condition = {"IfNoneMatch": "*"}
                    else:
                        etag = clients[0].put_object(Bucket=BUCKET, Key=key, Body=b"v0")["ETag"]
                        condition = {"IfMatch": etag}
                    winners[race(clients, key, condition)] += 1
                print(
                    f"{mode}: {arguments.rounds} rounds of {arguments.writers} writers, "
                    f"switch interval {arguments.switch_interval}s: "
                    f"rounds by number of winners {dict(sorted(winners.items()))}"
                )
        finally:
            server.process.terminate()
            server.process.wait()


if __name__ == "__main__":
    main()
