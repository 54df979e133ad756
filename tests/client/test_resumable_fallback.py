"""Where the service has no resumable uploads (S3 storage answers 501 at `/files/uploads`),
a large file still uploads: by `POST /files`, unless `--resumable` asked for tus."""

from __future__ import annotations

from pathlib import Path

import pytest

from ..conftest import md5, random_bytes
from .conftest import Recorded, run_cli

pytestmark = pytest.mark.s3_only


async def test_a_large_file_falls_back_to_post_files_and_resumable_says_why_not(
    served: Recorded, tmp_path: Path
) -> None:
    data = random_bytes(40_000, seed=4)
    path = tmp_path / "big.bin"
    path.write_bytes(data)
    common = ("--conversation-id=3", "--resumable-threshold=32k", "--json")
    run = await run_cli("upload", str(path), *common, "--server", served.url)
    assert run.code == 0, run.stderr
    (result,) = run.json_lines()
    assert result["etag"] == md5(data)
    assert [e.status for e in served.seen.to("/files/uploads", "POST")] == [501]
    assert [e.status for e in served.seen.to("/files", "POST")] == [200]

    served.seen.clear()
    refused = await run_cli("upload", str(path), *common, "--resumable", "--server", served.url)
    assert refused.code == 1
    (failure,) = refused.json_lines()
    assert (failure["status"], failure["error"]) == (501, "not_implemented")
    assert served.seen.to("/files", "POST") == []  # asked for tus: no silent fallback
