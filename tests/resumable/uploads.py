"""What a service's uploads area holds, on either storage, seen from outside the service.

Local: the directories under `<root>/.uploads/`, and the ids of stop markers in its
`.stop/` (a marker left behind is a piece left behind). S3: the upload ids that have any object
or open multipart upload under `<prefix>.uploads/` (info, tails, the data's multipart
upload or staged object), so a removal that left any piece behind is seen.
"""

from __future__ import annotations

from ..conftest import LocalStore, Service
from ..s3support import BUCKET

UPLOADS = ".uploads/"
STOPS = ".stop"  # localstore.STOPS_DIR: the stop markers


def uploads_left(service: Service) -> list[str]:
    """The ids of the uploads that still have something stored."""
    store = service.store
    if isinstance(store, LocalStore):
        directory = store.root / UPLOADS
        if not directory.exists():
            return []
        markers = directory / STOPS
        left = {p.name for p in directory.iterdir() if p != markers}
        return sorted(left | ({p.name for p in markers.iterdir()} if markers.exists() else set()))
    return sorted({key.partition("/")[0] for key in upload_objects(service)})


def upload_objects(service: Service) -> list[str]:
    """S3: every object and multipart upload under the uploads area, relative to it."""
    store = service.store
    assert not isinstance(store, LocalStore)
    client, area = store.moto.client, store.prefix + UPLOADS
    keys: list[str] = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=area):
        keys += [item["Key"].removeprefix(area) for item in page.get("Contents", [])]
    answer = client.list_multipart_uploads(Bucket=BUCKET, Prefix=area)
    keys += [f"{u['Key'].removeprefix(area)} (multipart)" for u in answer.get("Uploads", [])]
    return sorted(keys)
