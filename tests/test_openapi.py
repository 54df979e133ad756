"""The OpenAPI document against the live server: schemathesis generates the requests."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from .conftest import ServiceFactory, run_program

CHECKS = ",".join(
    [
        "not_a_server_error",
        "status_code_conformance",
        "content_type_conformance",
        "response_headers_conformance",
        "response_schema_conformance",
    ]
)


async def test_document_shape(start_service: ServiceFactory) -> None:
    service = await start_service(base_path="/media")
    async with service.session.get(service.url + "/media/openapi.json") as response:
        assert response.status == 200
        document = await response.json()
    assert document["openapi"] == "3.1.0"
    assert {"/media/files", "/media/files/from-url", "/media/files/download",
            "/media/api/uploadFileStream"} <= set(document["paths"])  # fmt: skip
    for path, item in document["paths"].items():
        for operation in item.values():
            assert "200" in operation["responses"], path


async def test_schemathesis_finds_no_server_error_and_no_mismatch(
    start_service: ServiceFactory, tmp_path: Path
) -> None:
    service = await start_service(fetch_connect_timeout=1.0, fetch_timeout=2.0, max_size=100_000)
    # The document's examples name this file, so generated downloads also find one.
    await service.upload_json(b"\x89PNG\r\n\x1a\n" + bytes(500), filename="photo.png")
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    assert st, "schemathesis is a dev dependency"
    code, stdout, stderr = await run_program(
        st, "--no-color", "run", service.url + "/openapi.json",
        "--checks", CHECKS,
        "--max-examples", "25",
        "--workers", "1",  # its threads trip a CPython 3.11 AST bug when several run
        "--seed", "20261124",
        "--report-dir", str(tmp_path / "reports"),
        cwd=tmp_path,  # it keeps a cache in the working directory
    )  # fmt: skip
    output = stdout.decode() + stderr.decode()
    assert code == 0, output[-6000:]
    assert " passed" in output and "failed" not in output.split("SUMMARY")[-1]
