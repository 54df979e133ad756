"""Schemathesis hooks for tests/test_openapi.py (loaded by the `st` process it runs).

A draft creation (`POST /files/uploads` with `Upload-Draft-Interop-Version`) gets the
interim response `104 Upload Resumption Supported` first, as the draft asks; Python's
http.client, under schemathesis's requests, takes any 1xx but 100 for the final
answer, so it could not read the real one. Those requests are sent as tus instead
(the draft's creation and its 104 are tested on the wire in tests/test_resumable_*).
"""

from __future__ import annotations

from typing import Any

import schemathesis


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    if case.method.upper() == "POST" and case.path.endswith("/files/uploads") and case.headers:
        case.headers.pop("Upload-Draft-Interop-Version", None)
