"""SSEDecoder: server-sent events from bytes split anywhere, as the WHATWG spec reads them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.providers.translation import SSEDecoder, SSEEvent, UpstreamFormatError


def decode(*pieces: bytes) -> list[SSEEvent]:
    decoder = SSEDecoder()
    events = [e for piece in pieces for e in decoder.feed(piece)]
    return events + decoder.end()


def test_fields_lines_and_dispatch() -> None:
    data = (
        b": a comment\n"
        b"event: one\ndata: first\ndata:  second\nid: 7\nretry: 10\nunknown: x\n\n"
        b"data\n\n"  # a field with no colon: empty data
        b"event: no-data\n\n"  # no data: not dispatched
        b"data:x\n\n"
    )
    assert decode(data) == [
        SSEEvent("one", "first\n second"),
        SSEEvent(None, ""),
        SSEEvent(None, "x"),
    ]


def test_a_crlf_split_between_pieces_is_one_line_end() -> None:
    assert decode(b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n") == [
        SSEEvent(None, "a"),
        SSEEvent(None, "b"),
    ]


def test_a_last_cr_ends_its_line_when_the_stream_ends() -> None:
    assert decode(b"data: a\r\r") == [SSEEvent(None, "a")]
    assert decode(b"data: a\r") == []  # its blank line never came


def test_a_character_split_across_pieces_is_read_whole() -> None:
    snowman = "data: ☃\n\n".encode()
    assert decode(snowman[:7], snowman[7:]) == [SSEEvent(None, "☃")]


def test_an_event_over_the_limit_is_refused() -> None:
    decoder = SSEDecoder(max_event_bytes=32)
    assert decoder.feed(b"data: " + b"x" * 20 + b"\n\n") == [SSEEvent(None, "x" * 20)]
    with pytest.raises(UpstreamFormatError):
        decoder.feed(b"data: " + b"x" * 20 + b"\ndata: " + b"y" * 20)


def test_bytes_that_are_not_utf8_are_refused() -> None:
    with pytest.raises(UpstreamFormatError):
        SSEDecoder().feed(b"data: \xff\n\n")


STREAM = b"event: a\ndata: 1\n\r\n: c\rdata: 2\r\rdata: 3\ndata: 4\n\n"


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.integers(0, len(STREAM)), max_size=10))
def test_any_split_decodes_the_same(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    pieces = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert (
        decode(*pieces)
        == decode(STREAM)
        == [
            SSEEvent("a", "1"),
            SSEEvent(None, "2"),
            SSEEvent(None, "3\n4"),
        ]
    )
