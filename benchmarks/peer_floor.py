"""The aiohttp floor: the least an aiohttp application can do per request, for comparison.

streamproxy is one aiohttp application on uvloop. Where a target stays out of reach
(benchmarks/RESULTS.md), the question is whether the service's own code is in the
way, or aiohttp and the work the contract demands already are. This peer answers it:
aiohttp's low-level `web.Server` (no router, no middleware, no access log), on the
same uvloop, doing only

- `GET /files/download?filename=NAME` with one `Range: bytes=A-B`: a 206 whose head
  aiohttp writes and whose body the kernel sends (streamproxy's own `sendfile`, as
  uvloop has no `loop.sendfile`, of a descriptor opened once per name), no checks;
- `POST /files` (a multipart body) or any `PUT /NAME`: the file part, its MD5, and
  then, unless `BENCH_FLOOR_DURABLE=0`, the same durable store as streamproxy's in
  its barest form: an `O_TMPFILE`, one write (a `writev` of the pieces), `fsync`,
  `linkat` to a new name, `fsync` of the directory (no group commit); the JSON
  answer. A body is kept as the pieces aiohttp read, not joined, its file part cut at
  the ends (the closing delimiter ends the body). A small one (the 5 KB scenario) is
  hashed on the event loop and stored on a worker thread; a large one (5 MB x 64) is
  hashed and stored in one trip to a worker thread, so the event loop only receives.
  No limit on memory: a body is held whole until it is stored.

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
# A body this large is hashed and stored on a worker thread, where hashing it does not
# hold up the event loop (the other uploads' reads); a small one is hashed on the loop,
# which costs less than a second trip to a thread.
BIG_BODY = 64 * 1024
_IOV_MAX = 1024  # what one writev takes on Linux


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
        """The body as aiohttp's pieces, not joined; a multipart's file part is what lies
        between the end of its headers and the closing delimiter, which ends the body."""
        pieces: list[bytes | memoryview] = []
        while piece := await request.content.readany():
            pieces.append(piece)
        content_type = request.headers.get("Content-Type", "")
        if content_type.startswith("multipart/"):
            boundary = content_type.split("boundary=", 1)[1].encode()
            _drop_head(pieces)
            _drop_tail(pieces, len(b"\r\n--" + boundary + b"--\r\n"))
        name = uuid.uuid4().hex
        size = sum(len(piece) for piece in pieces)
        if size >= BIG_BODY:
            etag = await asyncio.to_thread(self._hash_and_store, name, pieces)
        else:
            etag = _md5(pieces)
            if DURABLE:
                await asyncio.to_thread(self._store, name, pieces)
        answer = {"name": name, "size": size, "etag": etag}
        return web.Response(text=json.dumps(answer), content_type="application/json")

    def _hash_and_store(self, name: str, pieces: list[bytes | memoryview]) -> str:
        etag = _md5(pieces)
        if DURABLE:
            self._store(name, pieces)
        return etag

    def _store(self, name: str, pieces: list[bytes | memoryview]) -> None:
        fd = os.open(self.storage, os.O_WRONLY | os.O_TMPFILE, 0o644)
        try:
            for start in range(0, len(pieces), _IOV_MAX):
                group = pieces[start : start + _IOV_MAX]
                if os.writev(fd, group) != sum(len(piece) for piece in group):
                    raise OSError("short write")
            os.fsync(fd)
            os.link(str(fd), self.storage / name, src_dir_fd=self._proc_fd)
        finally:
            os.close(fd)
        os.fsync(self._directory)


def _md5(pieces: list[bytes | memoryview]) -> str:
    md5 = hashlib.md5(usedforsecurity=False)
    for piece in pieces:
        md5.update(piece)
    return md5.hexdigest()


def _drop_head(pieces: list[bytes | memoryview]) -> None:
    """Remove everything up to the file part's first byte (its headers end in a blank
    line); leading pieces are joined only if the head spans them."""
    while True:
        first = bytes(pieces[0])
        end = first.find(b"\r\n\r\n", first.find(b'name="file"'))
        if end >= 0 or len(pieces) == 1:
            pieces[0] = memoryview(first)[end + 4 :]
            return
        pieces[0:2] = [first + bytes(pieces[1])]


def _drop_tail(pieces: list[bytes | memoryview], length: int) -> None:
    """Remove the body's last `length` bytes."""
    while length:
        last = pieces[-1]
        if len(last) <= length:
            length -= len(last)
            pieces.pop()
        else:
            pieces[-1] = memoryview(last)[: len(last) - length]
            length = 0


async def serve(port: int, storage: Path) -> None:
    server = web.Server(Floor(storage).handle, access_log=None)
    loop = asyncio.get_running_loop()
    await loop.create_server(server, "127.0.0.1", port, backlog=1024)
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), Path(sys.argv[2])))
