"""The form parser on large pieces: the delimiter found by `bytesearch` (libc's memmem
above a size), and the bytes held back at a piece's end only when they may begin one."""

from __future__ import annotations

import random

import pytest

from streamproxy.intake import bytesearch
from streamproxy.intake.multipart_parser import FormLimits, FormParser, PartData, PartEnd

from .conftest import file_part, multipart_body, random_bytes

BOUNDARY = "big"
DELIMITER = b"\r\n--" + BOUNDARY.encode()
# Where the file's bytes begin in a form of one file part.
HEAD = len(multipart_body(BOUNDARY, [file_part(b"")])) - len(DELIMITER + b"--\r\n")


def test_find_is_bytes_find() -> None:
    """Around and above the size where the foreign search takes over, with the needle,
    its prefixes and near-misses planted anywhere, at the start and at the end."""
    rng = random.Random(7)
    needle = b"\r\n--" + b"0123456789abcdef" * 2
    sizes = [0, 1, bytesearch.MIN_FOREIGN - 1, bytesearch.MIN_FOREIGN, 70_000]
    for size in sizes + [rng.randrange(1, 100_000) for _ in range(200)]:
        haystack = bytearray(random_bytes(size, seed=size))
        for _ in range(rng.randrange(4)):
            planted = needle[: rng.randrange(1, len(needle) + 1)]
            at = rng.choice([0, max(0, size - len(planted)), rng.randrange(size + 1)])
            haystack[at : at + len(planted)] = planted
        data = bytes(haystack)
        expected = data.find(needle)
        assert bytesearch.find(data, needle) == expected, size
        assert bytesearch.find(data + needle, needle) == (data + needle).find(needle)
        # A body read straight into a buffer comes as writable views (searched in place),
        # a view of bytes is read-only (copied first): the same answers.
        assert bytesearch.find(memoryview(haystack), needle) == expected, size
        assert bytesearch.find(memoryview(bytearray(b"x" + data))[1:], needle) == expected
        assert bytesearch.find(memoryview(data), needle) == expected, size


def _body_of(content: bytes, cuts: list[int], *, views: bool = False) -> tuple[bytes, int]:
    """The file part's bytes as the parser hands them on, fed a form cut at `cuts`; and
    how many PartData events it took. `views`: each piece a writable memoryview of a
    buffer, as a body read by runtime/directbody.py comes."""
    body = multipart_body(BOUNDARY, [file_part(content)])
    parser = FormParser(BOUNDARY.encode(), FormLimits())
    events = []
    start = 0
    for cut in [*cuts, len(body)]:
        piece = body[start:cut]
        events += parser.feed(memoryview(bytearray(piece)) if views else piece)
        start = cut
    events += parser.feed(b"")
    data = b"".join(bytes(event.data) for event in events if isinstance(event, PartData))
    assert sum(isinstance(event, PartEnd) for event in events) == 1
    return data, sum(isinstance(event, PartData) for event in events)


@pytest.mark.parametrize("views", [False, True], ids=["bytes", "views"])
@pytest.mark.parametrize("seed", range(40))
def test_large_pieces_with_delimiter_starts_at_their_ends(seed: int, views: bool) -> None:
    """Pieces of tens of KiB whose ends hold CR, CRLF, the delimiter's start but one
    byte and near-misses: the file's bytes come through exactly, at any cut, whether
    the pieces are bytes or views of buffers."""
    rng = random.Random(seed)
    content = bytearray(random_bytes(200_000, seed=seed))
    head = HEAD
    cuts = sorted(rng.sample(range(head, head + len(content)), 12))
    for cut in cuts:
        planted = rng.choice(
            [b"\r", b"\r\n", DELIMITER[:-1], DELIMITER[:-1] + b"x", b"\r\r\n-", b"\n--"]
        )
        at = cut - head - rng.randrange(len(planted) + 1)
        content[max(0, at) : max(0, at) + len(planted)] = planted
    assert DELIMITER not in content
    end = head + len(content)  # and the closing delimiter cut anywhere
    cuts.append(end + rng.randrange(len(DELIMITER) + 1))
    data, _ = _body_of(bytes(content), cuts, views=views)
    assert data == bytes(content)


@pytest.mark.parametrize("views", [False, True], ids=["bytes", "views"])
def test_a_piece_with_nothing_to_hold_goes_on_whole(views: bool) -> None:
    """One event per piece when no piece ends in what may begin a delimiter."""
    content = random_bytes(64 * 1024 * 8, seed=3).replace(b"\r", b"x")
    head = HEAD
    cuts = list(range(head, head + len(content), 64 * 1024))
    data, pieces = _body_of(content, cuts, views=views)
    assert data == content
    assert pieces == len(cuts)
