"""The benchmarks' floor peer and how the harness clears uploads between runs.

The floor (`benchmarks.peer_floor`) is what RESULTS.md measures streamproxy against
to say whether a target is out of reach for any aiohttp application here, so it must
do what it claims: store durably under a new name, answer the MD5, serve a range.
The harness sets small uploads aside rather than deleting them (ext4 without a
journal makes every later file creation pay for recent deletions); a rename keeps
the inode, which is what the test checks.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

import aiohttp
import pytest

from benchmarks import load
from benchmarks.harness import SET_ASIDE_BELOW, Bench
from benchmarks.scenarios import QUICK
from benchmarks.servers import FloorPeer
from benchmarks.system import file_system

pytestmark = pytest.mark.timeout(60)


async def test_the_floor_stores_under_a_new_name_and_serves_a_range(tmp_path: Path) -> None:
    floor = FloorPeer(tmp_path)
    data = os.urandom(70_000)
    await floor.start()
    try:
        async with aiohttp.ClientSession() as session:
            form = aiohttp.FormData()
            form.add_field("conversationId", "c1")
            form.add_field("file", data, filename="a.bin")
            async with session.post(floor.base_url + "/files", data=form) as response:
                assert response.status == 200
                answer = await response.json()
            assert answer["size"] == len(data)
            assert answer["etag"] == hashlib.md5(data).hexdigest()
            assert (floor.storage / answer["name"]).read_bytes() == data
            url = f"{floor.base_url}/files/download?filename={answer['name']}"
            async with session.get(url, headers={"Range": "bytes=100-65635"}) as response:
                assert response.status == 206
                assert response.headers["Content-Range"] == f"bytes 100-65635/{len(data)}"
                assert await response.read() == data[100:65636]
    finally:
        await floor.stop()


async def test_the_harness_starts_the_floor_with_one_upload_and_no_fixtures(
    tmp_path: Path,
) -> None:
    """The floor is a row of the 5 KB upload scenario only: the harness checks it takes
    an upload and leaves it without the download scenarios' fixtures (a 1 GiB one would
    be read whole into its memory)."""
    floor = FloorPeer(tmp_path)
    await floor.start()
    try:
        async with aiohttp.ClientSession() as session:
            bench = Bench(QUICK, {}, session, {})
            await bench.make_fixtures(floor)
        assert bench.fixtures[floor.name] == {}
        stored = [path for path in floor.uploaded_files() if path.name != "ready"]
        assert [path.stat().st_size for path in stored] == [QUICK.small]
    finally:
        await floor.stop()


async def test_clearing_sets_small_uploads_aside_and_deletes_large_ones(tmp_path: Path) -> None:
    server = FloorPeer(tmp_path)
    server.prepare()
    small, large = server.storage / "small.bin", server.storage / "large.bin"
    small.write_bytes(b"x" * 5000)
    large.write_bytes(b"y" * SET_ASIDE_BELOW)
    inode = small.stat().st_ino
    async with aiohttp.ClientSession() as session:
        await Bench(QUICK, {}, session, {}).clean(server)
    assert not small.exists() and not large.exists()
    (moved,) = (server.workdir / "set-aside").glob("*-small.bin")
    assert moved.stat().st_ino == inode  # renamed, not deleted and written again
    assert moved.read_bytes() == b"x" * 5000


def test_the_machine_table_names_the_storage_file_system(tmp_path: Path) -> None:
    if shutil.which("findmnt") is None:
        pytest.skip("needs findmnt from Debian's package util-linux")
    expected = subprocess.run(
        ["findmnt", "-n", "-o", "FSTYPE,SOURCE,TARGET", "--target", str(tmp_path)],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    described = file_system(tmp_path)
    assert described.split()[0].rstrip(",") == expected[0]
    assert described.endswith(f"({expected[1]} on {expected[2]})")
    if expected[0] == "ext4":
        journal = any(Path("/proc/fs/jbd2").glob(f"{Path(expected[1]).name}-*"))
        assert ("without a journal" in described) is not journal


def test_every_upload_turn_sends_names_not_used_before(tmp_path: Path) -> None:
    """A name stored in an earlier turn would put streamproxy on its collision path (a
    failed link, then a suffixed name), which the floor's uuid names never take: two
    scripts made with the same prefix (two turns of `benchmarks.floor`) name differently."""
    peer = FloorPeer(tmp_path)
    prefix = re.compile(r'local name = "(floor-[0-9a-f]{8})-"')
    first, second = (prefix.search(load.wrk_upload_script(peer, 100, "floor")) for _ in range(2))
    assert first and second and first.group(1) != second.group(1)
