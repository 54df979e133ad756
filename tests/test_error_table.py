"""The one error table: what the README lists and what the live service answers follow it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from streamproxy.error_table import BY_CODE, TABLE

from .conftest import ServiceFactory

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_codes() -> list[tuple[str, int]]:
    """The `code` (status) pairs of the README's "### Errors" section, in order."""
    text = README.read_text()
    section = text[text.index("### Errors") :]
    section = section[: section.index("\n## ")]
    return [(code, int(status)) for code, status in re.findall(r"`(\w+)` \((\d{3})", section)]


def test_the_readme_lists_every_code_of_the_table_with_its_status() -> None:
    listed = readme_codes()
    assert listed == [(kind.code, kind.status) for kind in TABLE]


def test_each_code_is_declared_once_in_status_order() -> None:
    codes = [kind.code for kind in TABLE]
    assert len(codes) == len(set(codes)) == len(BY_CODE)
    assert [kind.status for kind in TABLE] == sorted(kind.status for kind in TABLE)
    assert all(kind.message and kind.when for kind in TABLE)


@pytest.mark.local_only  # the refusals come before storage is asked, whichever it is
async def test_errors_off_the_upload_routes_carry_the_tables_message(
    start_service: ServiceFactory,
) -> None:
    """Each error comes from its row: status, code, message and its row's headers."""
    service = await start_service(api_key=("k",), base_path="/media")
    cases = [
        ("GET", "/media/files/stat?filename=x.png", {}, "unauthorized"),
        ("GET", "/media/files/stat?filename=x.png", {"Authorization": "Bearer no"}, "forbidden"),
        ("GET", "/media/files/download?filename=nothing.png", {}, "not_found"),
        ("GET", "/media/files/download?filename=..", {}, "bad_request"),
        ("DELETE", "/media/healthz", {}, "method_not_allowed"),
        ("GET", "/media/nowhere", {}, "not_found"),
    ]
    for method, path, headers, code in cases:
        async with service.session.request(method, service.url + path, headers=headers) as answer:
            body = await answer.json()
            kind = BY_CODE[code]
            assert (answer.status, body["error"]) == (kind.status, code), (path, body)
            assert body["message"] == kind.message
            for name, value in kind.headers.items():
                assert answer.headers[name] == value
    async with service.session.get(service.url + "/media/files/stat?filename=x.png") as answer:
        assert answer.headers["WWW-Authenticate"] == 'Bearer realm="streamproxy"'
