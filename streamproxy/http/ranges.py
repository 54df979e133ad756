"""Byte ranges (RFC 9110 section 14): parsing `Range` against a file's size.

aiohttp's `request.http_range` knows a single range only, so multiple ranges,
clamping and the satisfiable/unsatisfiable distinction are handled here.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

MAX_RANGES = 16
MAX_HEADER = 1024
_SPEC_RE = re.compile(r"^\s*(\d{0,19})\s*-\s*(\d{0,19})\s*$")


@dataclass(frozen=True)
class ByteRange:
    start: int
    end: int  # inclusive, as in Content-Range

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


class Unsatisfiable(Exception):
    """No range in the header overlaps the file: 416."""


def parse_range(header: str | None, size: int) -> list[ByteRange] | None:
    """The ranges to send, or None to send the whole file (no header, or one to ignore).

    A malformed header, another unit, too many ranges or overlapping ones are
    ignored (the whole file is sent, as RFC 9110 allows); ends past the file are
    clamped; ranges that start past the end are dropped, and if none is left
    `Unsatisfiable` is raised.
    """
    if not header or len(header) > MAX_HEADER:
        return None
    unit, equals, spec_list = header.partition("=")
    if not equals or unit.strip().lower() != "bytes":
        return None
    specs = [spec for spec in spec_list.split(",") if spec.strip()]
    if not specs or len(specs) > MAX_RANGES:
        return None
    ranges: list[ByteRange] = []
    for spec in specs:
        match = _SPEC_RE.match(spec)
        if not match or not (match.group(1) or match.group(2)):
            return None
        first, last = match.group(1), match.group(2)
        if first:
            start = int(first)
            end = int(last) if last else size - 1
            if last and end < start:
                return None
            if start < size:
                ranges.append(ByteRange(start, min(end, size - 1)))
        else:
            suffix = int(last)
            if suffix > 0 and size > 0:
                ranges.append(ByteRange(max(0, size - suffix), size - 1))
    if not ranges:
        raise Unsatisfiable
    if len(ranges) > 1:
        ordered = sorted(ranges, key=lambda r: r.start)
        if any(b.start <= a.end for a, b in itertools.pairwise(ordered)):
            return None
    return ranges
