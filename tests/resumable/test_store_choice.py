"""Which upload store a storage gets: local storage never loads the S3 client (the
s3 extra is optional), S3 storage gets the S3 store with `--upload-lease` as its TTL."""

from __future__ import annotations

import sys
from pathlib import Path

from streamproxy.resumable.routes import upload_store_for
from streamproxy.resumable.s3adapter import S3UploadStore
from streamproxy.runtime.settings import Settings
from streamproxy.storage import open_storage

from ..conftest import run_program

CHOOSE_LOCAL = """
import sys
from streamproxy.resumable.routes import upload_store_for
from streamproxy.settings import Settings
from streamproxy.storage import open_storage
settings = Settings(storage=sys.argv[1])
print(type(upload_store_for(open_storage(settings), settings)).__name__)
print(sorted(name for name in sys.modules if name.startswith(("aiobotocore", "botocore"))))
"""


async def test_local_storage_gets_the_local_store_without_loading_s3(tmp_path: Path) -> None:
    code, out, err = await run_program(sys.executable, "-c", CHOOSE_LOCAL, str(tmp_path))
    assert code == 0, err
    assert out.decode().split("\n")[:2] == ["LocalUploadStore", "[]"]


def test_s3_storage_gets_the_s3_store_with_the_lease_setting() -> None:
    settings = Settings(storage="s3://bucket/prefix", upload_lease=7.0)
    store = upload_store_for(open_storage(settings), settings)
    assert isinstance(store, S3UploadStore) and store.area.ttl == 7.0
