"""What a resumable request is refused with: the status the protocols name, and why.

The state machine (state.py) and the header parsers (headers.py) stay free of HTTP
objects: they raise these, and the routes translate each into the JSON error of the
upload routes (`status`, `code` from API.md's table, `detail`), adding for the draft the
RFC 9457 problem `type` and members and the `Upload-Offset` the protocols ask for.

The integrator maps `code` onto errors.py's table; every code here is one of API.md's.
"""

from __future__ import annotations

from typing import Any, Final

MISMATCHING_OFFSET: Final = (
    "https://iana.org/assignments/http-problem-types#mismatching-upload-offset"
)
"""Draft (interop 6 and 8): an append whose `Upload-Offset` is not the resource's."""

INCONSISTENT_LENGTH: Final = (
    "https://iana.org/assignments/http-problem-types#inconsistent-upload-length"
)
"""Draft interop 8 (-06 on): length indicators that disagree, or a change of length."""

COMPLETED_UPLOAD: Final = "https://iana.org/assignments/http-problem-types#completed-upload"
"""Draft interop 6 (-05) only: an append to an upload that is already complete."""


class ResumableError(Exception):
    """A refusal: `status` and `code` as API.md's error table, `detail` for people."""

    status: int = 400
    code: str = "bad_request"
    problem: str | None = None

    def __init__(self, detail: str, **members: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.members: dict[str, Any] = members
        """Problem extension members (RFC 9457), e.g. expected-offset."""


class BadHeader(ResumableError):
    """A malformed protocol header (tus and the draft both answer 400)."""


class UnsupportedVersion(ResumableError):
    """No `Tus-Resumable` 1.0.0 and no draft interop version we speak (tus: 412)."""

    status = 412
    code = "unsupported_version"


class NotFound(ResumableError):
    """No such upload, or one that was cancelled (tus termination: 404 from then on)."""

    status = 404
    code = "not_found"


class Expired(ResumableError):
    """tus `expiration`: 410 Gone while the server still knows the upload expired."""

    status = 410
    code = "expired"


class OffsetMismatch(ResumableError):
    """tus core and the draft: 409 Conflict, with the resource's offset in `Upload-Offset`."""

    status = 409
    code = "offset_mismatch"
    problem = MISMATCHING_OFFSET

    def __init__(self, expected: int, provided: int) -> None:
        super().__init__(
            f"the upload is at offset {expected}, the request sent {provided}",
            **{"expected-offset": expected, "provided-offset": provided},
        )
        self.expected = expected


class Busy(ResumableError):
    """Another request holds the upload's lease.

    409 with the `offset_mismatch` code, as API.md's table says for a busy upload (tusd
    answers 423 Locked, which neither protocol names; clients handle 409 by asking for the
    offset again, which is what they should do here).
    """

    status = 409
    code = "offset_mismatch"


class LengthMismatch(ResumableError):
    """A length that contradicts the recorded one (tus: 400; draft: 400 + problem)."""

    problem = INCONSISTENT_LENGTH


class TooLarge(ResumableError):
    """Over the size cap, or bytes past the upload's length: 413 in both protocols."""

    status = 413
    code = "too_large"


class AlreadyComplete(ResumableError):
    """An append to an upload that is complete (draft -05's completed-upload, 400)."""

    problem = COMPLETED_UPLOAD


class Forbidden(ResumableError):
    """tus concatenation: a PATCH on a final upload is 403 and changes nothing."""

    status = 403
    code = "forbidden"


class ChecksumMismatch(ResumableError):
    """tus checksum: 460, the chunk discarded, offset and running MD5 unchanged."""

    status = 460
    code = "checksum_mismatch"


class Refused(ResumableError):
    """The completion was refused (415 type, 422 infected): replayed on later requests."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
