"""Storage without the resumable capability (S3, until its upload store lands): the
routes are there and say so with 501 `not_implemented`, storing nothing."""

from __future__ import annotations

import pytest

from ..conftest import Service

pytestmark = pytest.mark.s3_only


async def test_resumable_routes_answer_501_on_storage_without_them(service: Service) -> None:
    headers = {"Tus-Resumable": "1.0.0", "Upload-Length": "5"}
    async with service.session.post(service.url + "/files/uploads", headers=headers) as answer:
        body = await answer.json()
        assert (answer.status, body["error"]) == (501, "not_implemented")
        assert "POST /files" in body["detail"]
        assert answer.headers["Tus-Resumable"] == "1.0.0"
    assert service.stored_names() == set()
