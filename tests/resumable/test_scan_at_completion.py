"""A resumable upload is scanned once, whole, at completion, by a real clamd: a
signature split across two PATCHes is found (the scan reads the stored bytes, not
each request's), refused with 422 and the refusal replayed; a clean one is stored."""

from __future__ import annotations

from typing import Any

import pytest

from streamproxy.intake.scan import ClamdAddress

from ..conftest import ServiceFactory, md5, random_bytes
from ..test_scan import EICAR, SIGNATURE, Clamd
from ..test_scan import clamd as clamd  # the fixture: a real clamd with the EICAR signature

pytestmark = pytest.mark.every_s3_server  # completion reads the parts back from the bucket

TUS = {"Tus-Resumable": "1.0.0"}
PATCH = {**TUS, "Content-Type": "application/offset+octet-stream"}


async def test_the_whole_upload_is_scanned_at_completion(
    start_service: ServiceFactory, clamd: Clamd
) -> None:
    service = await start_service(clamd=ClamdAddress(path=str(clamd.socket)))
    uploads = service.url + "/files/uploads"
    infected = random_bytes(100_000) + EICAR + random_bytes(50_000)
    clean = random_bytes(150_000, seed=2)
    meta = "conversationId YzE=,filename ZmlsZS5iaW4="  # c1, file.bin
    answers: dict[str, Any] = {}
    for name, data in (("infected", infected), ("clean", clean)):
        headers = {**TUS, "Upload-Length": str(len(data)), "Upload-Metadata": meta}
        async with service.session.post(uploads, headers=headers) as answer:
            url = answer.headers["Location"]
        split = 100_000 + len(EICAR) // 2  # the signature straddles the two requests
        for start, end in ((0, split), (split, len(data))):
            headers = {**PATCH, "Upload-Offset": str(start)}
            async with service.session.patch(url, data=data[start:end], headers=headers) as answer:
                answers[name] = (answer.status, await answer.read(), answer.headers)
        async with service.session.get(url, headers=TUS) as answer:
            answers[name + " later"] = (answer.status, await answer.read(), answer.headers)
    status, body, _ = answers["infected"]
    assert status == 422 and b"infected" in body and SIGNATURE.encode() in body
    assert answers["infected later"][0] == 422
    status, _, clean_headers = answers["clean"]
    assert (status, clean_headers["ETag"]) == (204, f'"{md5(clean)}"')
    assert service.stored_names() == {"c1_file.bin"}
    assert await service.fetch("c1_file.bin") == clean
