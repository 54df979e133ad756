"""The FastAPI + uvicorn peer: what a Python user would write instead of streamproxy.

An `UploadFile` handler that writes the file to disk while computing its MD5, and a
`FileResponse` download (Starlette answers Range requests). The handlers are plain
`def`s, so FastAPI runs them on its thread pool, as its documentation advises for
blocking file I/O. Starlette first spools each upload to a temporary file (in memory
up to 1 MiB, then on disk): that second copy is part of what this peer costs.

Run by the harness as `uvicorn benchmarks.peer_fastapi:app`, storing in
`$BENCH_FASTAPI_STORAGE`. Imported only there, so FastAPI is needed only for `make bench`.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, HTTPException, UploadFile
from fastapi.responses import FileResponse

CHUNK = 1024 * 1024
STORAGE = Path(os.environ.get("BENCH_FASTAPI_STORAGE", "fastapi-storage"))


def upload(
    file: Annotated[UploadFile, File()], conversationId: Annotated[str, Form()]
) -> dict[str, Any]:
    safe = Path(file.filename or "file").name or "file"
    name = f"{conversationId}_{uuid.uuid4().hex[:8]}_{safe}"
    digest = hashlib.md5(usedforsecurity=False)
    size = 0
    with open(STORAGE / name, "xb") as out:
        while chunk := file.file.read(CHUNK):
            digest.update(chunk)
            out.write(chunk)
            size += len(chunk)
    return {"name": name, "size": size, "etag": digest.hexdigest()}


def download(filename: str) -> FileResponse:
    if not filename or Path(filename).name != filename or filename.startswith("."):
        raise HTTPException(400, "bad name")
    path = STORAGE / filename
    if not path.is_file():
        raise HTTPException(404, "not found")
    return FileResponse(path)


def healthz() -> dict[str, str]:
    return {"status": "ok"}


app = FastAPI()
app.add_api_route("/files", upload, methods=["POST"])
app.add_api_route("/files/download", download, methods=["GET"])
app.add_api_route("/healthz", healthz, methods=["GET"])
