"""The client commands against a live service: text and --json output, exit codes, progress."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import pty
import select
import struct
import sys
import termios
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from ..conftest import ServiceFactory, md5, random_bytes, require_program, run_program
from ..fetch.conftest import ALLOW_SOURCES
from ..fetch.sources import Source
from .conftest import Recorded, run_cli

PNG = b"\x89PNG\r\n\x1a\n" + random_bytes(5000, seed=11)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


async def test_upload_prints_the_name_and_url(served: Recorded, tmp_path: Path) -> None:
    photo = write(tmp_path / "photo.png", PNG)
    run = await run_cli("upload", str(photo), "--conversation-id", "11111", "--server", served.url)
    assert run.code == 0, run.stderr
    assert run.stdout.splitlines() == [
        f"{photo} -> 11111_photo.png (4.9 KiB, image/png, etag {md5(PNG)})",
        f"  {served.url}/files/download?filename=11111_photo.png",
    ]
    assert run.stderr == ""  # no terminal: no progress bar
    assert await served.service.fetch("11111_photo.png") == PNG


async def test_upload_json_gives_one_result_per_file_with_its_media_message(
    served: Recorded, tmp_path: Path
) -> None:
    photo = write(tmp_path / "photo.png", PNG)
    notes = write(tmp_path / "notes.txt", b"hello\n")
    run = await run_cli(
        "upload",
        str(photo),
        str(notes),
        "--conversation-id=7",
        "--caption",
        "Look",
        "--json",
        "--server",
        served.url,
    )
    assert run.code == 0, run.stderr
    first, second = run.json_lines()
    assert first["file"] == str(photo)
    assert {k: first[k] for k in ("name", "type", "size", "etag")} == {
        "name": "7_photo.png",
        "type": "image/png",
        "size": len(PNG),
        "etag": md5(PNG),
    }
    assert first["mediaMessage"]["type"] == "IMAGE"
    assert first["mediaMessage"]["caption"] == "Look"
    assert first["mediaMessage"]["attachment"]["mediaUrl"] == first["url"]
    assert first["mediaMessage"]["attachment"]["mediaLabel"] == "photo.png"
    assert (second["name"], second["mediaMessage"]["type"]) == ("7_notes.txt", "FILE")


async def test_a_missing_file_is_a_usage_error_and_nothing_is_sent(
    served: Recorded, tmp_path: Path
) -> None:
    photo = write(tmp_path / "photo.png", PNG)
    run = await run_cli(
        "upload",
        str(photo),
        str(tmp_path / "gone.png"),
        "--conversation-id=1",
        "--server",
        served.url,
    )
    assert run.code == 2
    assert "gone.png: not a readable file" in run.stderr
    assert served.seen.exchanges == []
    missing_option = await run_cli("upload", str(photo), "--server", served.url)
    assert missing_option.code == 2
    assert "--conversation-id" in missing_option.stderr


async def test_a_refused_upload_exits_1_with_the_error(start_recorded: Any, tmp_path: Path) -> None:
    served: Recorded = await start_recorded(max_size=1000)
    big = write(tmp_path / "big.bin", random_bytes(5000))
    small = write(tmp_path / "small.bin", b"fits")
    run = await run_cli(
        "upload", str(big), str(small), "--conversation-id=1", "--json", "--server", served.url
    )
    assert run.code == 1
    refused, stored = run.json_lines()
    assert refused.pop("requestId")  # refused while streaming: the service's log has it
    assert refused == {
        "file": str(big),
        "status": 413,
        "error": "too_large",
        "detail": "the file is larger than the limit of 1000 bytes",
        "message": "An error occurred while uploading file.",
    }
    assert stored["name"] == "1_small.bin"
    assert f"streamproxy upload: {big}: 413 too_large: " in run.stderr


async def test_fetch_imports_a_url(start_recorded: Any, start_source: Any) -> None:
    served: Recorded = await start_recorded(fetch_allow=ALLOW_SOURCES)
    source: Source = await start_source()
    url = source.file("/v/clip.webm", b"\x1a\x45\xdf\xa3" + random_bytes(4000))
    run = await run_cli(
        "fetch",
        url,
        "--channel",
        "whatsapp",
        "--conversation-id",
        "13318",
        "--mime-type",
        "video/webm",
        "--json",
        "--server",
        served.url,
    )
    assert run.code == 0, run.stderr
    (result,) = run.json_lines()
    assert (result["sourceUrl"], result["name"], result["type"]) == (
        url,
        "13318_clip.webm",
        "video/webm",
    )
    assert result["mediaMessage"]["type"] == "VIDEO"
    assert result["mediaMessage"]["attachment"]["mediaLabel"] == "clip.webm"
    refused = await run_cli("fetch", "ftp://x/y", "--channel", "web", "--server", served.url)
    assert refused.code == 1
    assert "400 bad_request" in refused.stderr or "400 source_not_allowed" in refused.stderr


async def test_fetch_labels_the_file_as_stat_and_message_do(
    start_recorded: Any, start_source: Any
) -> None:
    """One rule for the label: the original name the service recorded, never the
    stored name's uniqueness suffix (the second import of one URL gets one)."""
    served: Recorded = await start_recorded(fetch_allow=ALLOW_SOURCES)
    source: Source = await start_source()
    url = source.file("/docs/report.pdf", b"%PDF-1.7\n" + random_bytes(3000))
    common = ["--channel", "web", "--conversation-id", "7", "--server", served.url]
    await run_cli("fetch", url, *common)
    run = await run_cli("fetch", url, "--json", *common)
    assert run.code == 0, run.stderr
    (result,) = run.json_lines()
    stored = result["name"]
    assert stored.startswith("7_report-") and stored != "7_report.pdf"
    fetched = result["mediaMessage"]
    assert fetched["additionalDetails"]["fileName"] == "report.pdf"
    assert fetched["attachment"]["mediaLabel"] == "report.pdf"
    assert fetched["attachment"]["mediaName"] == stored
    stat = (await run_cli("stat", stored, "--json", "--server", served.url)).json_lines()[0]
    assert stat["originalName"] == "report.pdf"
    message = await run_cli("message", stored, "--server", served.url)
    assert json.loads(message.stdout) == fetched


async def test_download_saves_resumes_and_takes_ranges(
    served: Recorded, tmp_path: Path, monkeypatch: Any
) -> None:
    data = random_bytes(800_000, seed=12)
    await served.service.upload_json(data, filename="clip.webm", conversation_id="d")
    monkeypatch.chdir(tmp_path)

    whole = await run_cli("download", "d_clip.webm", "--server", served.url)
    assert whole.code == 0, whole.stderr
    assert (tmp_path / "d_clip.webm").read_bytes() == data
    assert whole.stdout.strip() == "saved d_clip.webm (781.2 KiB; MD5 matches the ETag)"

    partial = write(tmp_path / "partial.webm", data[:300_000])
    served.seen.clear()
    resumed = await run_cli(
        "download", "d_clip.webm", "-o", str(partial), "--json", "--server", served.url
    )
    assert resumed.code == 0, resumed.stderr
    (result,) = resumed.json_lines()
    assert result == {
        "name": "d_clip.webm",
        "path": str(partial),
        "size": len(data),
        "received": len(data) - 300_000,
        "resumedFrom": 300_000,
        "status": 206,
        "etag": md5(data),
        "type": "video/webm",
        "verified": True,
        "contentRange": f"bytes 300000-{len(data) - 1}/{len(data)}",
    }
    assert partial.read_bytes() == data
    get = served.seen.to("/files/download", "GET")[-1]
    assert get.headers["Range"] == "bytes=300000-" and get.headers["If-Range"] == f'"{md5(data)}"'

    ranged = await run_cli(
        "download", "d_clip.webm", "--range", "0-99", "-o", "head.bin", "--server", served.url
    )
    assert ranged.code == 0, ranged.stderr
    assert (tmp_path / "head.bin").read_bytes() == data[:100]

    write(tmp_path / "again.webm", random_bytes(10, seed=1))
    fresh = await run_cli(
        "download", "d_clip.webm", "-o", "again.webm", "--no-resume", "--server", served.url
    )
    assert fresh.code == 0 and (tmp_path / "again.webm").read_bytes() == data


async def test_download_failures_and_usage(served: Recorded, tmp_path: Path) -> None:
    missing = await run_cli(
        "download", "nobody.bin", "-o", str(tmp_path / "x"), "--json", "--server", served.url
    )
    assert missing.code == 1
    assert missing.json_lines()[0]["error"] == "not_found"
    assert not (tmp_path / "x").exists()
    bad_range = await run_cli("download", "a.bin", "--range", "9-1", "--server", served.url)
    assert bad_range.code == 2 and "not a byte range" in bad_range.stderr
    bad_server = await run_cli("stat", "a.bin", "--server", "localhost:8080")
    assert bad_server.code == 2 and "not an http(s) URL" in bad_server.stderr


async def test_stat_text_and_json(served: Recorded) -> None:
    body = await served.service.upload_json(PNG, filename="photo.png", conversation_id="5")
    text = await run_cli("stat", "5_photo.png", "--server", served.url)
    assert text.code == 0
    assert f"etag:          {md5(PNG)}" in text.stdout.splitlines()
    as_json = await run_cli("stat", "5_photo.png", "--json", "--server", served.url)
    (document,) = as_json.json_lines()
    async with served.service.session.get(
        served.url + "/files/stat", params={"filename": body["name"]}
    ) as response:
        assert document == await response.json()
    unknown = await run_cli("stat", "5_nothing.png", "--server", served.url)
    assert unknown.code == 1
    assert "404 not_found: no file named '5_nothing.png'" in unknown.stderr


async def test_message_prints_the_media_message(served: Recorded) -> None:
    body = await served.service.upload_json(PNG, filename="developer.png", conversation_id="13318")
    run = await run_cli("message", body["name"], "--caption", "Screenshot", "--server", served.url)
    assert run.code == 0, run.stderr
    assert json.loads(run.stdout) == {
        "type": "IMAGE",
        "caption": "Screenshot",
        "markdownText": None,
        "additionalDetails": {"fileName": "developer.png"},
        "attachment": {
            "mediaUrl": body["url"],
            "mimeType": "image/png",
            "size": len(PNG),
            "thumbnail": None,
            "mediaLabel": "developer.png",
            "mediaName": "13318_developer.png",
        },
    }


async def test_progress_bars_show_bytes_rate_and_time_left(
    served: Recorded, tmp_path: Path
) -> None:
    big = write(tmp_path / "big.bin", random_bytes(2_000_000, seed=13))
    run = await run_cli(
        "upload", str(big), "--conversation-id=p", "--progress", "--server", served.url
    )
    assert run.code == 0, run.stderr
    final = run.stderr.rsplit("\r", 1)[-1]
    assert final.startswith("big.bin: 100%")
    assert "1.91M/1.91M" in final  # bytes
    assert "B/s]" in final  # rate
    assert "<00:00" in final  # time left


async def test_the_entry_point_takes_server_and_key_from_the_environment(
    start_recorded: Any, tmp_path: Path
) -> None:
    """`python -m streamproxy` in a child process, its stderr a terminal (bars allowed)."""
    served: Recorded = await start_recorded(api_key=("k1", "k2"))
    big = write(tmp_path / "big.bin", random_bytes(1_000_000, seed=14))
    env = {**os.environ, "STREAMPROXY_SERVER": served.url, "STREAMPROXY_CLIENT_API_KEY": "k2"}
    controller, terminal = pty.openpty()
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "streamproxy",
            "upload",
            str(big),
            "--conversation-id=t",
            stdout=asyncio.subprocess.PIPE,
            stderr=terminal,
            env=env,
        )
        stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        os.close(terminal)
    os.close(controller)
    assert process.returncode == 0
    assert stdout.decode().startswith(f"{big} -> t_big.bin (976.6 KiB")
    (upload,) = served.seen.to("/files", "POST")
    assert upload.headers["Authorization"] == "Bearer k2"
    # Usage errors exit 2 from the real entry point too.
    code, _, stderr = await run_program(sys.executable, "-m", "streamproxy", "download")
    assert code == 2 and b"NAME_OR_URL" in stderr


async def test_a_resume_onto_other_bytes_leaves_them_as_they_were_and_names_no_resume(
    served: Recorded, tmp_path: Path
) -> None:
    data = random_bytes(400_000, seed=15)
    await served.service.upload_json(data, filename="clip.webm", conversation_id="c")
    mine = write(tmp_path / "clip.webm", random_bytes(100_000, seed=16))  # someone's own file
    common = ["-o", str(mine), "--server", served.url]
    refused = await run_cli("download", "c_clip.webm", *common)
    assert refused.code == 1
    assert "checksum_mismatch" in refused.stderr and "--no-resume" in refused.stderr
    assert mine.read_bytes() == random_bytes(100_000, seed=16)  # not the corrupt mix
    fresh = await run_cli("download", "c_clip.webm", "--no-resume", *common)
    assert fresh.code == 0, fresh.stderr
    assert mine.read_bytes() == data


def _read_terminal(fd: int, marker: bytes, seconds: float) -> bytes:
    """What a terminal shows until `marker` appears (or `seconds` pass, or it closes)."""
    shown = b""
    deadline = time.monotonic() + seconds
    while marker not in shown and (left := deadline - time.monotonic()) > 0:
        ready, _, _ = select.select([fd], [], [], min(left, 0.5))
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the other side closed
                break
            if not chunk:
                break
            shown += chunk
    return shown


async def test_the_progress_bar_shows_while_the_server_stalls_before_the_first_chunk(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    """On a terminal (auto mode), the bar and its clock appear while no byte has come."""
    release = asyncio.Event()

    async def stall(request: web.Request, response: web.StreamResponse) -> None:
        if request.method == "GET" and request.path.endswith("/files/download"):
            await release.wait()

    def hold_downloads(app: web.Application) -> None:
        app.on_response_prepare.append(stall)

    service = await start_service(prepare=hold_downloads)
    data = random_bytes(300_000, seed=17)
    await service.upload_json(data, filename="stall.bin", conversation_id="s")
    target = tmp_path / "stall.bin"
    controller, terminal = pty.openpty()
    # A terminal of 100 columns (a bare pty has 0, and tqdm draws nothing in 0 columns).
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "streamproxy", "download", "s_stall.bin", "-o", str(target),
            "--server", service.url,
            stdout=asyncio.subprocess.PIPE, stderr=terminal,
        )  # fmt: skip
        try:
            # The bar, and its clock past one second, while the server still stalls.
            shown = await asyncio.to_thread(_read_terminal, controller, b"[00:01,", 30)
            assert b"\rstall.bin: 0.00B [00:01," in shown, shown
            assert not release.is_set() and not target.exists()
        finally:
            release.set()
        stdout, _ = await asyncio.wait_for(process.communicate(), 60)
    finally:
        os.close(terminal)
        os.close(controller)
    assert process.returncode == 0
    assert stdout.decode().startswith("saved ")
    assert target.read_bytes() == data


async def test_upload_link_issues_a_link_that_takes_one_upload(
    start_recorded: Any, tmp_path: Path
) -> None:
    served: Recorded = await start_recorded(api_key=("k",), signing_key=("s",))
    before = int(time.time())
    run = await run_cli(
        "upload-link", "--conversation-id", "77", "--file-name", "id.png", "--max-size", "9000",
        "--allow-type", "image/*", "--expires-in", "600", "--json",
        "--server", served.url, "--api-key", "k",
    )  # fmt: skip
    assert run.code == 0, run.stderr
    (link,) = run.json_lines()
    assert set(link) == {"url", "expires"}
    assert before + 600 <= link["expires"] <= int(time.time()) + 600
    (issued,) = served.seen.to("/files/upload-links", "POST")
    assert (issued.headers["Authorization"], issued.status) == ("Bearer k", 200)
    curl = require_program("curl", "curl")
    photo = write(tmp_path / "scan.png", PNG)
    _, stdout, _ = await run_program(curl, "-sS", "-T", str(photo), link["url"])
    assert json.loads(stdout)["name"] == "77_id.png"  # the link's name
    _, stdout, _ = await run_program(curl, "-sS", "-T", str(photo), link["url"])
    assert json.loads(stdout)["error"] == "forbidden"
    text = await run_cli(
        "upload-link", "--conversation-id", "77", "--server", served.url, "--api-key", "k"
    )
    url, until = text.stdout.splitlines()
    assert url.startswith(served.url + "/files?conversationId=77&uploadToken=")
    assert until.startswith("  one upload, until 20")


async def test_upload_link_refusals_exit_1(start_recorded: Any) -> None:
    served: Recorded = await start_recorded(api_key=("k",))  # no --signing-key
    run = await run_cli(
        "upload-link", "--conversation-id", "1", "--json", "--server", served.url, "--api-key", "k"
    )
    assert run.code == 1
    (refused,) = run.json_lines()
    assert (refused["status"], refused["error"], refused["conversationId"]) == (
        403, "forbidden", "1",
    )  # fmt: skip
    assert "--signing-key" in refused["detail"]
    assert "streamproxy upload-link: upload link: 403 forbidden" in run.stderr
