"""The OpenAPI document's building blocks: references, header parameters, and the
error responses, whose codes (and which status each goes with) come from error_table.py.

Shared by the modules that write operations (`openapi`, `openapiresumable`), so
neither imports the other.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..error_table import BY_CODE, HEADERS_TOO_LARGE, INTERNAL, ErrorKind, codes_of
from ..runtime.settings import Settings
from .openapischemas import JSON, Schema

# Every route may answer these: a head over the limit, and an unexpected failure.
ANY_ROUTE = (431, 500)
ANY_ROUTE_KINDS = (HEADERS_TOO_LARGE, INTERNAL)


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def header(name: str, description: str, schema: Schema | None = None) -> Schema:
    """A request header parameter (a plain string unless `schema` says more)."""
    return {"name": name, "in": "header", "description": description,
            "schema": schema or {"type": "string"}}  # fmt: skip


def error_response(status: int, codes: list[str], *, extra_content: Schema | None = None) -> Schema:
    """One status's error response: the Error shape, with the codes the table gives it.

    `extra_content` adds media types besides JSON (the draft's problem documents).
    """
    headers = {
        name: {"description": f"sent with {kind.code}", "schema": {"type": "string"}}
        for kind in (BY_CODE[code] for code in codes)
        for name in kind.headers
    }
    response: Schema = {
        "description": "; ".join(f"{BY_CODE[code].code}: {BY_CODE[code].when}" for code in codes),
        "content": {
            JSON: {
                "schema": {
                    "allOf": [
                        ref("Error"),
                        {"properties": {"error": {"enum": codes}}},
                    ]
                }
            },
            **(extra_content or {}),
        },
    }
    if headers:
        response["headers"] = headers
    return response


def errors(*statuses: int, compat_status: bool = False) -> dict[str, Schema]:
    """The error responses of an operation, every code of each status; `compat_status`
    folds every 4xx into one 404."""
    by_status = {status: codes_of(status) for status in sorted({*statuses, *ANY_ROUTE})}
    if compat_status:
        folded = [code for status, codes in by_status.items() if status < 500 for code in codes]
        by_status = {404: folded} | {s: c for s, c in by_status.items() if s >= 500}
    return {str(status): error_response(status, codes) for status, codes in by_status.items()}


def errors_of(kinds: Iterable[ErrorKind]) -> dict[int, list[str]]:
    """Exactly these rows of the table (and the ones any route may answer), by status,
    each status's codes in the table's order."""
    chosen = {kind.code for kind in (*kinds, *ANY_ROUTE_KINDS)}
    return {
        status: [code for code in codes_of(status) if code in chosen]
        for status in sorted({BY_CODE[code].status for code in chosen})
    }


def key_required(settings: Settings) -> tuple[int, ...]:
    return (401, 403) if settings.api_key else ()
