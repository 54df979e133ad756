"""What a resumable request is refused with: the status the protocols name, and why.

The state machine (state.py) and the header parsers (headers.py) stay free of HTTP
objects: they raise these, and the routes translate each into the JSON error of the
upload routes (`status`, `code` from API.md's table, `detail`), adding for the draft the
RFC 9457 problem `type` and members and the `Upload-Offset` the protocols ask for.

Each refusal names its row of the one error table (error_table.py): status and code
come from there, never spelled here.
"""

from __future__ import annotations

from typing import Any, ClassVar, Final

from ..error_table import (
    BAD_REQUEST,
    CHECKSUM_MISMATCH,
    EXPIRED,
    FORBIDDEN,
    NOT_FOUND,
    OFFSET_MISMATCH,
    TOO_LARGE,
    UNSUPPORTED_VERSION,
    ErrorKind,
)

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

    kind: ClassVar[ErrorKind] = BAD_REQUEST
    problem: str | None = None
    close: ClassVar[bool] = False
    """End the connection after answering."""

    def __init__(self, detail: str, **members: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.members: dict[str, Any] = members
        """Problem extension members (RFC 9457), e.g. expected-offset."""
        self.status = self.kind.status
        self.code = self.kind.code


class BadHeader(ResumableError):
    """A malformed protocol header (tus and the draft both answer 400)."""


class UnsupportedVersion(ResumableError):
    """No `Tus-Resumable` 1.0.0 and no draft interop version we speak (tus: 412)."""

    kind = UNSUPPORTED_VERSION


class NotFound(ResumableError):
    """No such upload, or one that was cancelled (tus termination: 404 from then on)."""

    kind = NOT_FOUND


class Expired(ResumableError):
    """tus `expiration`: 410 Gone while the server still knows the upload expired."""

    kind = EXPIRED


class OffsetMismatch(ResumableError):
    """tus core and the draft: 409 Conflict, with the resource's offset in `Upload-Offset`."""

    kind = OFFSET_MISMATCH
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

    kind = OFFSET_MISMATCH


class Superseded(Busy):
    """A newer draft request stopped this append (takeover.py): what it wrote is kept;
    409, and the connection closes (the rest of its body was never read)."""

    close = True


class LengthMismatch(ResumableError):
    """A length that contradicts the recorded one (tus: 400; draft: 400 + problem)."""

    problem = INCONSISTENT_LENGTH


class TooLarge(ResumableError):
    """Over the size cap, or bytes past the upload's length: 413 in both protocols."""

    kind = TOO_LARGE

    def __init__(self, detail: str, *, size: int | None = None) -> None:
        super().__init__(detail)
        self.size = size
        """The bytes the upload would hold (a declared length, or its offset plus what
        the request sent), when known: the `size` of the `file.refused` it may send."""


class AlreadyComplete(ResumableError):
    """An append to an upload that is complete (draft -05's completed-upload, 400)."""

    problem = COMPLETED_UPLOAD


class Forbidden(ResumableError):
    """tus concatenation: a PATCH on a final upload is 403 and changes nothing."""

    kind = FORBIDDEN


class ChecksumMismatch(ResumableError):
    """tus checksum: 460, the chunk discarded, offset and running MD5 unchanged."""

    kind = CHECKSUM_MISMATCH


class Refused(ResumableError):
    """The completion was refused (415 type, 422 infected): replayed on later requests."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code = status, code  # as recorded from the table's ApiError
