"""The OpenAPI document against the live server: schemathesis generates the requests.

The document follows the settings it is served with, so it is checked under each
setting that changes the answers: API keys (401/403 on the keyed operations),
signed download links (403), and `--compat-status` (404 for every upload 4xx).
Each run's traffic (a HAR report) must contain the answers that setting exists
for, and every answer must be one the document lists for its operation and status.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from yarl import URL

from streamproxy import Settings, create_app
from streamproxy.error_table import TABLE
from streamproxy.http.openapiresumable import EXAMPLE_METADATA
from streamproxy.resumable.problems import (
    COMPLETED_UPLOAD,
    INCONSISTENT_LENGTH,
    MISMATCHING_OFFSET,
    ResumableError,
)

from .conftest import ServiceFactory, run_program

CHECKS = [
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
]
KEY = "schema-key"
DEFAULT_PHASES = "examples,coverage,fuzzing"
UPLOADS = ("/files", "/api/uploadFileStream", "/files/from-url")


async def get_document(service: Any, path: str = "/openapi.json") -> dict[str, Any]:
    async with service.session.get(service.url + path) as response:
        assert response.status == 200
        document: dict[str, Any] = await response.json()
        return document


def error_codes(operation: dict[str, Any], status: str) -> set[str]:
    schema = operation["responses"][status]["content"]["application/json"]["schema"]
    return set(schema["allOf"][1]["properties"]["error"]["enum"])


async def test_document_shape(start_service: ServiceFactory) -> None:
    service = await start_service(base_path="/media")
    document = await get_document(service, "/media/openapi.json")
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": service.url}]
    assert {"/media/files", "/media/files/from-url", "/media/files/download",
            "/media/api/uploadFileStream"} <= set(document["paths"])  # fmt: skip
    for path, item in document["paths"].items():
        for operation in item.values():
            assert any(status < "4" for status in operation["responses"]), path
            assert "security" not in operation, path  # no keys configured
    assert "securitySchemes" not in document["components"]
    error = document["components"]["schemas"]["Error"]
    assert error["properties"]["error"]["enum"] == [kind.code for kind in TABLE]
    download = document["paths"]["/media/files/download"]["get"]
    headers = {p["name"] for p in download["parameters"] if p["in"] == "header"}
    assert headers == {"Range", "If-Range", "If-None-Match", "If-Modified-Since",
                       "If-Match", "If-Unmodified-Since"}  # fmt: skip
    assert "403" not in download["responses"]  # downloads are open without signed links
    upload = document["paths"]["/media/files"]["post"]
    assert error_codes(upload, "400") == {"bad_request", "source_not_allowed"}
    assert error_codes(upload, "503") >= {"busy", "storage_unavailable", "scanner_unavailable"}


@pytest.mark.local_only  # the document depends on settings, not on the storage
async def test_the_document_follows_keys_links_compat_status_and_public_url(
    start_service: ServiceFactory,
) -> None:
    service = await start_service(
        api_key=(KEY,), signing_key=("sign",), compat_status=True,
        public_url=URL("https://media.example.com"),
    )  # fmt: skip
    document = await get_document(service)
    assert document["servers"] == [{"url": "https://media.example.com"}]
    assert document["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    paths = document["paths"]
    keyed = [paths[path]["post"] for path in (*UPLOADS, "/files/upload-links")]
    keyed.append(paths["/files"]["put"])
    keyed += [paths[path]["get"] for path in ("/files/stat", "/api/getFileStat")]
    for operation in keyed:
        assert operation["security"] == [{"apiKey": []}]
    for path in ("/files/download", "/api/downloadFileStream"):
        for operation in paths[path].values():
            assert "security" not in operation  # API.md: downloads stay open to browsers
            assert "403" in operation["responses"]  # ... but need a signed link
            required = {p["name"] for p in operation["parameters"] if p.get("required")}
            assert required == {"filename", "expires", "signature"}
    for path, method in [*((path, "post") for path in UPLOADS), ("/files", "put")]:
        operation = paths[path][method]
        fours = [status for status in operation["responses"] if status.startswith("4")]
        assert fours == ["404"], path  # every 4xx of an upload route is a 404
        assert {"unauthorized", "forbidden", "too_large", "bad_request"} <= error_codes(
            operation, "404"
        )
        assert "--compat-status" in operation["description"]
    stat = paths["/files/stat"]["get"]  # not an upload route: its statuses stay
    assert {"400", "401", "403", "404"} <= set(stat["responses"])
    # The resumable routes keep their protocols' statuses, and need the key but for OPTIONS.
    for path in ("/files/uploads", "/files/uploads/{upload_id}"):
        for method, operation in paths[path].items():
            assert ("security" in operation) == (method != "options"), (path, method)
    patch = paths["/files/uploads/{upload_id}"]["patch"]["responses"]
    assert {"401", "403", "409", "412", "460"} <= set(patch)
    assert "uploadToken" in {p["name"] for p in paths["/files/uploads"]["post"]["parameters"]}


async def test_servers_names_the_mount_of_a_sub_application(tmp_path: Path) -> None:
    """A host program's prefix is part of where the document's paths hang."""
    host = web.Application()
    settings = Settings(storage=str(tmp_path / "data"), base_path="/media")
    host.add_subapp("/chat", create_app(settings))
    server = TestServer(host, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        async with aiohttp.ClientSession() as session:
            origin = f"http://127.0.0.1:{server.port}"
            async with session.get(origin + "/chat/media/openapi.json") as response:
                document = await response.json()
            assert document["servers"] == [{"url": origin + "/chat"}]
            assert "/media/files" in document["paths"]
    finally:
        await server.close()


def served_operations(app: web.Application) -> set[tuple[str, str]]:
    """(path, method) of every route the app registered (the path as the document names it)."""
    return {
        (resource.canonical, route.method.lower())
        for resource in app.router.resources()
        for route in resource
    }


@pytest.mark.local_only  # the routes depend on settings, not on the storage
@pytest.mark.parametrize(
    "overrides",
    [{}, {"base_path": "/media", "api_key": (KEY,), "signing_key": ("sign",)}, {"ui": False}],
    ids=["defaults", "base-path-keys-links", "no-ui"],
)
async def test_every_route_the_app_serves_is_in_the_document(
    start_service: ServiceFactory, overrides: dict[str, Any]
) -> None:
    """A route added without its documentation fails here (and a documented one removed)."""
    service = await start_service(**overrides)
    document = await get_document(service, overrides.get("base_path", "") + "/openapi.json")
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert served_operations(service.server.app) == documented


def refusal_kinds() -> set[tuple[int, str]]:
    """The table's rows (status, code) the resumable refusals name: every ResumableError."""
    found: set[tuple[int, str]] = set()
    pending = [ResumableError]
    while pending:
        cls = pending.pop()
        found.add((cls.kind.status, cls.kind.code))
        pending += cls.__subclasses__()
    return found


@pytest.mark.local_only  # the document depends on settings, not on the storage
async def test_the_document_has_the_resumable_routes_as_the_code_answers(
    start_service: ServiceFactory,
) -> None:
    service = await start_service(max_size=123_456)
    document = await get_document(service)
    uploads, upload = (
        document["paths"]["/files/uploads"],
        document["paths"]["/files/uploads/{upload_id}"],
    )
    assert set(uploads) == {"options", "post"}
    assert set(upload) == {"options", "head", "patch", "delete", "get"}
    # OPTIONS: the document's values are what the live route advertises.
    async with service.session.options(service.url + "/files/uploads") as response:
        assert response.status == 204
        advertised = response.headers
    documented = uploads["options"]["responses"]["204"]["headers"]
    for name, spec in documented.items():
        assert advertised[name] == spec["schema"]["const"], name
    assert documented["Tus-Max-Size"]["schema"]["const"] == "123456"
    # Every refusal the resumable code raises is documented on the routes that append.
    for operation in (uploads["post"], upload["patch"]):
        for status, code in refusal_kinds():
            assert code in error_codes(operation, str(status)), code
        conflict = operation["responses"]["409"]
        assert "Upload-Offset" in conflict["headers"]
        assert "application/problem+json" in conflict["content"]  # the draft's problem
        assert "Tus-Version" in operation["responses"]["412"]["headers"]
    assert error_codes(upload["patch"], "460") == {"checksum_mismatch"}
    assert error_codes(upload["head"], "410") == {"expired"}
    assert "460" not in upload["head"]["responses"]  # what HEAD never answers is not listed
    # A final upload waiting for its parts has no offset (tus concatenation-unfinished);
    # a HEAD or GET may assemble it, and answer what its commit refuses.
    assert not upload["head"]["responses"]["200"]["headers"]["Upload-Offset"].get("required")
    for operation in (upload["head"], upload["get"]):
        assert error_codes(operation, "415") == {"type_not_allowed"}
        assert error_codes(operation, "410") == {"expired"}
    result = upload["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert result == {"$ref": "#/components/schemas/UploadResult"}
    problem = document["components"]["schemas"]["UploadProblem"]["properties"]["type"]["enum"]
    assert {MISMATCHING_OFFSET, INCONSISTENT_LENGTH, COMPLETED_UPLOAD} == set(problem)
    assert "104 Upload Resumption Supported" in uploads["post"]["description"]
    # The creation links to the upload resource (schemathesis follows them).
    links = uploads["post"]["responses"]["201"]["links"]
    operation_ids = {op["operationId"] for op in upload.values() if "operationId" in op}
    assert {link["operationId"] for link in links.values()} == operation_ids


def template_of(path: str, document: dict[str, Any]) -> str:
    """The document's path for a request's path (`/files/uploads/ID` is `.../{upload_id}`)."""
    if path in document["paths"]:
        return path
    templates: list[str] = list(document["paths"])
    for template in templates:
        pattern = re.sub(r"\\{[^}]+\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            return template
    return path


def check_traffic(har: Path, document: dict[str, Any]) -> Counter[tuple[str, str, int]]:
    """Every answer to a documented operation is documented, with its status's codes."""
    seen: Counter[tuple[str, str, int]] = Counter()
    for entry in json.loads(har.read_text())["log"]["entries"]:
        method = entry["request"]["method"].lower()
        path = template_of(URL(entry["request"]["url"]).path, document)
        status = entry["response"]["status"]
        seen[(method, path, status)] += 1
        operation = document["paths"].get(path, {}).get(method)
        if operation is None:
            continue  # schemathesis probing methods the document does not list (405)
        assert str(status) in operation["responses"], (method, path, status)
        text = entry["response"].get("content", {}).get("text")
        if status >= 400 and method != "head" and text:
            code = json.loads(text)["error"]
            assert code in error_codes(operation, str(status)), (method, path, status, code)
    return seen


# Settings, the headers schemathesis sends, its extra checks. With the key sent, its
# ignored_auth check probes each keyed operation without a key (401) and with a wrong
# one (403).
RUNS: dict[str, tuple[dict[str, Any], dict[str, str], list[str]]] = {
    "api-key": ({"api_key": (KEY,)}, {"Authorization": f"Bearer {KEY}"}, ["ignored_auth"]),
    "signing-key": ({"signing_key": ("sign",)}, {}, []),
    "compat-status": ({"compat_status": True, "max_size": 1000}, {}, []),
}


async def run_schemathesis(
    url: str,
    tmp_path: Path,
    max_examples: int,
    headers: dict[str, str] | None = None,
    checks: list[str] | None = None,
    paths: list[str] | None = None,
) -> Path:
    """Run it over the live service; the HAR report of every request it sent.

    `paths` are the arguments that choose the operations: by default all but the
    resumable ones, which have their own run (their operations chain through headers).
    """
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is a dev dependency"
    reports = tmp_path / "reports"
    args = ["--checks", ",".join([*CHECKS, *(checks or [])])]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    # Without the resumable routes no operation has links: no stateful phase.
    args += paths or ["--exclude-path-regex", "/files/uploads", "--phases", DEFAULT_PHASES]
    code, stdout, stderr = await run_program(
        st, "--no-color", "run", url + "/openapi.json",
        *args,
        "--max-examples", str(max_examples),
        "--workers", "1",  # its threads trip a CPython 3.11 AST bug when several run
        "--seed", "20261124",
        "--report", "har", "--report-dir", str(reports),
        cwd=tmp_path,  # it keeps a cache in the working directory
    )  # fmt: skip
    output = stdout.decode() + stderr.decode()
    assert code == 0, output[-6000:]
    summary = output.split("SUMMARY")[-1]
    # ("Authentication failed" is a warning: signed downloads answer only 403 here.)
    assert " passed" in summary and not re.search(r"\d+ failed", summary), summary
    (har,) = reports.glob("har-*.json")
    return har


async def test_schemathesis_finds_no_server_error_and_no_mismatch(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    service = await start_service(
        fetch_connect_timeout=1.0, fetch_timeout=2.0, max_size=100_000, ui=False
    )  # (the page is in the document, but it is no API: time for the API's operations)
    # The document's examples name this file, so generated downloads also find one.
    await service.upload_json(b"\x89PNG\r\n\x1a\n" + bytes(500), filename="photo.png")
    har = await run_schemathesis(service.url, tmp_path, 25)
    seen = check_traffic(har, await get_document(service))
    assert seen[("get", "/files/download", 200)] and seen[("post", "/files", 200)]
    assert seen[("put", "/files", 200)]
    assert seen[("post", "/files/upload-links", 403)]  # no --signing-key here


@pytest.mark.local_only  # what changes is the settings' answers, not the storage's
@pytest.mark.parametrize("run", RUNS)
async def test_schemathesis_under_each_setting_that_changes_the_answers(
    start_service: ServiceFactory, tmp_path: Path, run: str
) -> None:
    overrides, headers, checks = RUNS[run]
    service = await start_service(
        fetch_connect_timeout=1.0, fetch_timeout=2.0, ui=False, **overrides
    )
    await service.upload_json(b"\x89PNG\r\n\x1a\n" + bytes(500), filename="photo.png",
                              headers=headers)  # fmt: skip
    har = await run_schemathesis(service.url, tmp_path, 10, headers, checks)
    statuses: dict[tuple[str, str], set[int]] = {}
    for method, path, status in check_traffic(har, await get_document(service)):
        statuses.setdefault((method, path), set()).add(status)
    if run == "api-key":
        for operation in (("post", "/files"), ("get", "/files/stat")):
            assert {200, 401, 403} <= statuses[operation], operation
        assert statuses[("get", "/files/download")] >= {200}  # open without a key
    elif run == "signing-key":
        assert 403 in statuses[("get", "/files/download")]
        assert 200 in statuses[("post", "/files")]
        assert 200 in statuses[("put", "/files")]
        assert 200 in statuses[("post", "/files/upload-links")]
    else:
        for operation in [*(("post", path) for path in UPLOADS), ("put", "/files")]:
            fours = {status for status in statuses[operation] if 400 <= status < 500}
            assert fours == {404}, (operation, statuses[operation])


# Coverage's many header variants, and stateful chains of creations, take minutes here:
# the creation's links to the resource are in the document, but not followed in the suite.
RESUMABLE_PHASES = "examples,fuzzing"


@pytest.mark.local_only  # the protocol is the same on every storage (test_resumable_* cover S3)
async def test_schemathesis_on_the_resumable_routes(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    """The resumable routes against their documentation, one protocol header given.

    Every request is sent with `Tus-Resumable: 1.0.0` so that generated requests pass the
    protocol check (the draft's header, when generated, still wins) and reach the routes'
    own checks; the resource routes act on an unfinished upload made here, and the
    creations' Location links to the resource routes for the stateful phase.
    """
    service = await start_service(max_size=100_000)
    headers = {"Tus-Resumable": "1.0.0", "Upload-Length": "10", "Upload-Metadata": EXAMPLE_METADATA}
    async with service.session.post(service.url + "/files/uploads", headers=headers) as created:
        assert created.status == 201
        upload_id = created.headers["Location"].rpartition("/")[2]
    hooks = Path(__file__).with_name("schemathesis_hooks.py")
    (tmp_path / "schemathesis.toml").write_text(
        f'hooks = "{hooks}"\n[parameters]\n"path.upload_id" = "{upload_id}"\n'
    )
    har = await run_schemathesis(
        service.url, tmp_path, 10, {"Tus-Resumable": "1.0.0"},
        paths=["--include-path-regex", "/files/uploads", "--phases", RESUMABLE_PHASES],
    )  # fmt: skip
    seen = check_traffic(har, await get_document(service))
    resource = "/files/uploads/{upload_id}"
    assert seen[("options", "/files/uploads", 204)] and seen[("options", resource, 204)]
    assert seen[("head", resource, 200)] + seen[("head", resource, 204)]  # the upload's offset
    reached = {(method, status) for method, path, status in seen if path == resource}
    assert {("patch", 412), ("patch", 415)} < reached  # past the protocol check, and before
    assert 400 in {status for method, path, status in seen if method == "post"}  # its checks
