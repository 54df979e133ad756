"""HTTP dates do not follow the process locale (issue 10).

A host program that mounts the app and calls `setlocale(LC_TIME, ...)` (for its
own German or French pages) must not change what the service sends: dates made
with `strftime("%a, %d %b ...")` would read "Di, 01 Dez 2026", which no client
parses, and If-Range with the date the client was given would never match.
The service here runs in the test's own process, the way a host program runs it.
"""

from __future__ import annotations

import email.utils
import locale
import re
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from .conftest import Service, random_bytes, require_program

LOCALE = "de_DE.UTF-8"
# RFC 9110 section 5.6.7: IMF-fixdate, with the English names whatever the locale.
IMF_FIXDATE = re.compile(
    r"(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)"
    r" \d{4} \d\d:\d\d:\d\d GMT"
)


@pytest.fixture(scope="session")
def locale_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A German locale compiled into a temporary directory (for LOCPATH): no root needed."""
    localedef = require_program("localedef", "libc-bin")
    if not Path("/usr/share/i18n/locales/de_DE").exists():
        pytest.skip("needs the de_DE locale source from Debian's package locales")
    target = tmp_path_factory.mktemp("locales")
    subprocess.run(
        [localedef, "-c", "-i", "de_DE", "-f", "UTF-8", str(target / LOCALE)],
        check=False,
        capture_output=True,
    )
    assert (target / LOCALE).is_dir(), f"localedef made no {LOCALE}"
    return target


@pytest.fixture
def german_time_names(locale_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This process's LC_TIME is German while the test runs, as a host program may set it."""
    monkeypatch.setenv("LOCPATH", str(locale_dir))  # glibc reads it on each setlocale
    saved = locale.setlocale(locale.LC_TIME)
    locale.setlocale(locale.LC_TIME, LOCALE)
    try:
        tuesday_in_december = time.strptime("2026-12-01", "%Y-%m-%d")
        assert time.strftime("%a %b", tuesday_in_december) == "Di Dez"  # the locale took
        yield
    finally:
        locale.setlocale(locale.LC_TIME, saved)


async def test_dates_are_rfc_9110_under_a_german_locale(
    service: Service, german_time_names: None
) -> None:
    data = random_bytes(5_000, seed=5)
    name = (await service.upload_json(data, filename="datum.bin"))["name"]
    url = service.url + "/files/download"
    async with service.session.get(service.url + "/files/stat", params={"filename": name}) as r:
        created = datetime.strptime((await r.json())["created"], "%Y-%m-%dT%H:%M:%SZ")
        stat_date = r.headers["Last-Modified"]
    expected = email.utils.format_datetime(created.replace(tzinfo=UTC), usegmt=True)
    async with service.session.get(url, params={"filename": name}) as response:
        assert await response.read() == data
        last_modified = response.headers["Last-Modified"]
    assert IMF_FIXDATE.fullmatch(last_modified), last_modified
    assert last_modified == stat_date == expected

    # The date the client was given works as a validator.
    headers = {"Range": "bytes=0-9", "If-Range": last_modified}
    async with service.session.get(url, params={"filename": name}, headers=headers) as response:
        assert response.status == 206
        assert await response.read() == data[:10]
    headers = {"If-Modified-Since": last_modified}
    async with service.session.get(url, params={"filename": name}, headers=headers) as response:
        assert response.status == 304
        assert response.headers["Last-Modified"] == expected
