"""The test page in a real browser: Playwright driving Debian's Chromium, headless.

The page is served under a base path and an API key, as an operator would run
it; the test uploads through the file picker, reads the result, plays the video
and seeks in it (range requests, 206 in the network log), imports from a URL,
and takes the screenshot that the README shows (docs/test-page.png).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from ..conftest import (
    ServiceFactory,
    eventually,
    md5,
    random_bytes,
    require_program,
    run_program,
)
from ..fetch.conftest import ALLOW_SOURCES
from ..fetch.sources import Source

playwright_api = pytest.importorskip("playwright.async_api")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "test-page.png"
KEY = "page-key"

# Play the video, then seek into its second half; report what the element saw.
PLAY_AND_SEEK = """
async (video) => {
  const once = (name) =>
    new Promise((resolve) => video.addEventListener(name, resolve, {once: true}));
  video.muted = true;
  if (video.readyState < 1) await once("loadedmetadata");
  await video.play();
  while (video.currentTime === 0) await once("timeupdate");
  const played = video.currentTime;
  video.pause();
  const target = video.duration * 0.6;
  const seeked = once("seeked");
  video.currentTime = target;
  await seeked;
  if (video.readyState < 2) await once("loadeddata");
  return {played, target, time: video.currentTime, duration: video.duration,
          readyState: video.readyState, error: video.error ? video.error.code : null};
}
"""


def require_chromium() -> Path:
    if not CHROMIUM.exists():
        pytest.skip(f"needs {CHROMIUM} from Debian's package chromium (make test installs it)")
    return CHROMIUM


DROPPED_FILE = """
() => {
  const transfer = new DataTransfer();
  transfer.items.add(new File(["dropped text"], "dropped.txt", {type: "text/plain"}));
  return transfer;
}
"""
INLINE_SCRIPT = """
() => {
  const script = document.createElement("script");
  script.textContent = "window.inlineRan = true";
  document.head.append(script);
}
"""


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    chromium = require_chromium()
    async with playwright_api.async_playwright() as playwright:
        # launch() gives every run a fresh, temporary user-data-dir of its own.
        browser = await playwright.chromium.launch(
            executable_path=str(chromium), args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


async def make_media(tmp_path: Path) -> tuple[Path, Path]:
    """A 4-second VP8 WebM (keyframe every second) and a PNG, made by Debian's ffmpeg."""
    ffmpeg = require_program("ffmpeg", "ffmpeg")
    video, photo = tmp_path / "clip.webm", tmp_path / "photo.png"
    quiet = (ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi")
    code, _, err = await run_program(
        *quiet,
        "-i",
        "testsrc=size=320x180:rate=15:duration=4",
        "-c:v",
        "libvpx",
        "-b:v",
        "150k",
        "-g",
        "15",
        str(video),
    )
    assert code == 0, err
    code, _, err = await run_program(
        *quiet, "-i", "smptebars=size=320x180", "-frames:v", "1", str(photo)
    )
    assert code == 0, err
    return video, photo


async def finished(page: Any, title: str) -> Any:
    """The card of a finished upload or import, which must have succeeded."""
    card = page.locator(".result.ok, .result.failed", has_text=title)
    await card.wait_for()
    if await card.evaluate("card => card.classList.contains('failed')"):
        pytest.fail(f"{title}: " + await card.locator(".error").inner_text())
    return card


async def card_fields(card: Any) -> dict[str, str]:
    fields = {}
    for name in ("name", "size", "type", "etag", "message"):
        fields[name] = await card.locator("." + name).inner_text()
    fields["href"] = await card.locator("a.link").get_attribute("href")
    return fields


async def test_the_page_uploads_plays_seeks_and_imports(
    start_service: ServiceFactory, start_source: Any, browser: Any, tmp_path: Path
) -> None:
    video, photo = await make_media(tmp_path)
    service = await start_service(
        base_path="/media", api_key=(KEY,), fetch_allow=ALLOW_SOURCES, max_size=10 << 20
    )
    source: Source = await start_source()
    report = b"%PDF-1.4\n" + random_bytes(20_000, seed=21)
    source_url = source.file(
        "/shared/report.pdf", report, headers={"Content-Type": "application/pdf"}
    )

    page = await browser.new_page(viewport={"width": 1000, "height": 1180})
    page.set_default_timeout(15_000)
    policy_problems: list[str] = []
    page.on(
        "console",
        lambda message: (
            policy_problems.append(message.text)
            if "Content Security Policy" in message.text
            else None
        ),
    )
    page.on("pageerror", lambda error: policy_problems.append(str(error)))
    downloads: list[tuple[int, str | None]] = []
    page.on(
        "response",
        lambda response: (
            downloads.append((response.status, response.request.headers.get("range")))
            if "/media/files/download" in response.url
            else None
        ),
    )

    await page.goto(service.url + "/media")  # redirected to /media/: the page's base
    await page.wait_for_selector("body.ready")
    assert page.url == service.url + "/media/"

    # Without the key the service refuses, and the page says why.
    await page.fill("#conversation-id", "13318")
    await page.set_input_files("#files", [str(photo)])
    refused = page.locator(".result.failed")
    await refused.wait_for()
    assert "unauthorized" in await refused.locator(".error").inner_text()
    await refused.evaluate("card => card.remove()")

    # Import from a URL: the service fetches it.
    await page.fill("#api-key", KEY)
    await page.fill("input[name=sourceUrl]", source_url)
    await page.click("#import-form button")
    imported = await finished(page, "report.pdf")
    message = json.loads(await imported.locator(".message").inner_text())
    assert message["type"] == "FILE"
    assert message["attachment"]["mediaName"] == "13318_report.pdf"
    assert message["attachment"]["mediaLabel"] == "report.pdf"

    # Upload through the file picker: an image and a video, each with its own card.
    await page.fill("#caption", "Clip of the day")
    await page.set_input_files("#files", [str(photo)])
    await finished(page, "photo.png")
    await page.set_input_files("#files", [str(video)])
    card = await finished(page, "clip.webm")
    fields = await card_fields(card)
    data = video.read_bytes()
    expected_url = f"{service.url}/media/files/download?filename=13318_clip.webm"
    assert fields["name"] == "13318_clip.webm"
    assert fields["type"] == "video/webm"
    assert fields["etag"] == md5(data)
    assert fields["size"].endswith(f"({len(data)} bytes)")
    assert fields["href"] == expected_url
    message = json.loads(fields["message"])
    assert message == {
        "type": "VIDEO",
        "caption": "Clip of the day",
        "markdownText": None,
        "additionalDetails": {"fileName": "clip.webm"},
        "attachment": {
            "mediaUrl": expected_url,
            "mimeType": "video/webm",
            "size": len(data),
            "thumbnail": None,
            "mediaLabel": "clip.webm",
            "mediaName": "13318_clip.webm",
        },
    }
    image = page.locator(".result.ok", has_text="photo.png").locator("img")
    assert await image.evaluate("img => img.complete && img.naturalWidth") == 320

    played = await card.locator("video").evaluate(PLAY_AND_SEEK)
    assert played["error"] is None
    assert played["played"] > 0
    assert played["duration"] == pytest.approx(4, abs=0.2)
    assert played["time"] == pytest.approx(played["target"], abs=0.01)
    assert played["readyState"] >= 2
    # The media element fetched the file with range requests, answered 206.
    assert any(status == 206 and byte_range for status, byte_range in downloads), downloads
    assert policy_problems == []

    await page.evaluate("window.scrollTo(0, 0)")
    shot = tmp_path / "test-page.png"
    await page.screenshot(path=str(shot))
    assert 0 < shot.stat().st_size < 150_000
    if os.environ.get("STREAMPROXY_UPDATE_SCREENSHOT") or not SCREENSHOT.exists():
        SCREENSHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(shot, SCREENSHOT)

    # Drag and drop: a file dropped on the zone is uploaded like a picked one.
    dropped = await page.evaluate_handle(DROPPED_FILE)
    await page.dispatch_event("#drop", "drop", {"dataTransfer": dropped})
    card = await finished(page, "dropped.txt")
    assert await card.locator(".name").inner_text() == "13318_dropped.txt"
    assert await card.locator(".type").inner_text() == "text/plain"

    # The policy is in force (and the listener above would have seen a breach).
    await page.evaluate(INLINE_SCRIPT)
    assert await page.evaluate("window.inlineRan === undefined")
    assert any("Content Security Policy" in problem for problem in policy_problems)


@pytest.mark.local_only  # the page's own files, whatever the storage
async def test_loading_the_page_asks_for_nothing_that_is_missing(
    start_service: ServiceFactory, browser: Any
) -> None:
    """Every request the browser makes for the page (its icon included) is answered.

    Chromium asks for `/favicon.ico` unless the page names an icon; the service
    has none there, so that was a 404 in the server's log and the console.
    """
    answered: list[tuple[str, int]] = []

    async def record(request: web.Request, response: web.StreamResponse) -> None:
        answered.append((request.path, response.status))

    service = await start_service(
        base_path="/media", prepare=lambda app: app.on_response_prepare.append(record)
    )
    page = await browser.new_page()
    page.set_default_timeout(15_000)
    console: list[str] = []
    page.on("console", lambda message: console.append(f"{message.type}: {message.text}"))
    await page.goto(service.url + "/media/")
    await page.wait_for_selector("body.ready")
    # The icon is asked for after the load, on the browser's own schedule.
    await eventually(lambda: any("icon" in path for path, _ in answered))
    await page.close()
    assert all(status < 400 for _, status in answered), answered
    assert ("/media/ui/icon.svg", 200) in answered
    assert not [line for line in console if line.startswith("error")], console
