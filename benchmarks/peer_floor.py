"""The aiohttp floor: the least an aiohttp application can do per request, for comparison.

streamproxy is one aiohttp application on uvloop. Where a target stays out of reach
(benchmarks/RESULTS.md), the question is whether the service's own code is in the
way, or aiohttp and the work the contract demands already are. This peer answers it:
aiohttp's low-level `web.Server` (no router, no middleware, no access log), on the
same uvloop, doing only

- `GET /files/download?filename=NAME` with one `Range: bytes=A-B`: a 206 whose head
  aiohttp writes and whose body the kernel sends (streamproxy's own `sendfile`, as
  uvloop has no `loop.sendfile`, of a descriptor opened once per name), no checks;
- `POST /files` (a multipart body, read whole: the suite sends small ones here) or any
  `PUT /NAME`: the file part found with two `find`s, its MD5, and then, unless
  `BENCH_FLOOR_DURABLE=0`, the same durable store as streamproxy's in its barest
  form on a worker thread: an `O_TMPFILE`, one write, `fsync`, `linkat` to a
  new name, `fsync` of the directory (no group commit); the JSON answer.

It checks nothing a client sends, so it is not a service: it is the floor an aiohttp
service stands on. Run as `python -m benchmarks.peer_floor PORT STORAGE` by
`benchmarks.floor`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import uuid
from pathlib import Path

import uvloop
from aiohttp import web

from streamproxy.http.sendfile import sendfile

DURABLE = os.environ.get("BENCH_FLOOR_DURABLE", "1") != "0"


class Floor:
    """The two handlers over one storage directory; see the module docstring."""

    def __init__(self, storage: Path) -> None:
        self.storage = storage
        self._descriptors: dict[str, int] = {}
        self._directory = os.open(storage, os.O_RDONLY | os.O_DIRECTORY)
        # linkat through /proc/self/fd follows the link to the unnamed file only when
        # given a directory descriptor (os.link alone calls link(2), which does not).
        self._proc_fd = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.method == "GET":
            return await self.download(request)
        if request.method in ("POST", "PUT"):
            return await self.upload(request)
        return web.Response(status=405)

    async def download(self, request: web.BaseRequest) -> web.StreamResponse:
        name = request.query.get("filename") or request.path.lstrip("/")
        fd = self._descriptors.get(name)
        if fd is None:
            fd = self._descriptors[name] = os.open(self.storage / name, os.O_RDONLY)
        size = os.fstat(fd).st_size
        first, last = 0, size - 1
        status = 200
        spec = request.headers.get("Range", "")
        if spec.startswith("bytes="):
            start, _, end = spec[6:].partition("-")
            first, last, status = int(start), min(int(end or last), size - 1), 206
        response = web.StreamResponse(status=status)
        response.content_length = last - first + 1
        response.content_type = "application/octet-stream"
        if status == 206:
            response.headers["Content-Range"] = f"bytes {first}-{last}/{size}"
        await response.prepare(request)
        with os.fdopen(os.dup(fd), "rb") as file:
            await sendfile(request.transport, file, first, last - first + 1, idle_timeout=30)
        await response.write_eof()
        return response

    async def upload(self, request: web.BaseRequest) -> web.Response:
        body = await request.read()
        content_type = request.headers.get("Content-Type", "")
        data: bytes | memoryview = body
        if content_type.startswith("multipart/"):
            boundary = content_type.split("boundary=", 1)[1].encode()
            file_part = body.find(b'name="file"')
            start = body.find(b"\r\n\r\n", file_part) + 4
            end = body.find(b"\r\n--" + boundary, start)
            data = memoryview(body)[start:end]
        etag = hashlib.md5(data, usedforsecurity=False).hexdigest()
        name = uuid.uuid4().hex
        if DURABLE:
            await asyncio.to_thread(self._store, name, data)
        answer = {"name": name, "size": len(data), "etag": etag}
        return web.Response(text=json.dumps(answer), content_type="application/json")

    def _store(self, name: str, data: bytes | memoryview) -> None:
        fd = os.open(self.storage, os.O_WRONLY | os.O_TMPFILE, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
            os.link(str(fd), self.storage / name, src_dir_fd=self._proc_fd)
        finally:
            os.close(fd)
        os.fsync(self._directory)


async def serve(port: int, storage: Path) -> None:
    server = web.Server(Floor(storage).handle, access_log=None)
    loop = asyncio.get_running_loop()
    await loop.create_server(server, "127.0.0.1", port, backlog=1024)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), Path(sys.argv[2])))
