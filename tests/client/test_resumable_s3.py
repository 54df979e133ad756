"""On S3 storage a large file goes by tus as on local storage: the upload's state is in
the bucket, so the client's PATCHes may land on any instance."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import md5, random_bytes
from .conftest import Recorded, run_cli

pytestmark = pytest.mark.s3_only


async def test_a_large_file_goes_resumably_on_s3(served: Recorded, tmp_path: Path) -> None:
    data = random_bytes(200_000, seed=4)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    common = ("--conversation-id=3", "--resumable-threshold=32k", "--chunk-size=64k", "--json")
    run = await run_cli("upload", str(path), *common, "--server", served.url)
    assert run.code == 0, run.stderr
    (result,) = run.json_lines()
    assert result["etag"] == md5(data)
    assert [e.status for e in served.seen.to("/files/uploads", "POST")] == [201]
    assert served.seen.to("/files", "POST") == []  # no fallback to a plain upload
