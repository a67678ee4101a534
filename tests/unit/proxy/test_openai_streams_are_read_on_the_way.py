"""OpenAI streams pass through event by event: their usage chunk read (and dropped unless the
client asked for it), their end noticed, however the bytes are split."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from sluice.core import ErrorKind
from sluice.providers.openai import OpenAIStream, ResponsesStream, ask_for_usage

CONTENT = b'data: {"choices":[{"index":0,"delta":{"content":"hi"}}],"usage":null}\n\n'
USAGE = b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":5}}\n\n'
DONE = b"data: [DONE]\n\n"
STREAM = CONTENT * 3 + USAGE + DONE


def run(stream: OpenAIStream, pieces: list[bytes]) -> bytes:
    return b"".join(stream.feed(p) for p in pieces) + stream.finish()


def test_the_usage_chunk_is_counted_and_dropped_for_a_client_that_did_not_ask() -> None:
    stream = OpenAIStream(keep_usage=False)

    out = run(stream, [STREAM])

    assert out == CONTENT * 3 + DONE
    assert stream.usage == {"input": 3, "output": 5}
    assert stream.error is None


def test_the_usage_chunk_goes_to_a_client_that_asked() -> None:
    stream = OpenAIStream(keep_usage=True)

    assert run(stream, [STREAM]) == STREAM
    assert stream.usage == {"input": 3, "output": 5}


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12), st.booleans())
def test_any_split_gives_the_same_stream(cuts: list[int], keep: bool) -> None:
    points = sorted(set(cuts))
    pieces = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    stream = OpenAIStream(keep_usage=keep)

    out = run(stream, pieces)

    assert out == (STREAM if keep else CONTENT * 3 + DONE)
    assert stream.usage == {"input": 3, "output": 5}
    assert stream.error is None


def test_a_stream_that_ends_without_done_is_a_cut() -> None:
    stream = OpenAIStream(keep_usage=False)

    out = run(stream, [CONTENT, CONTENT[:10]])

    assert out == CONTENT + CONTENT[:10]  # what came is passed on
    assert stream.error is not None
    assert stream.error.error is ErrorKind.STREAM_CUT


def test_the_request_asks_for_usage_once() -> None:
    body = {"model": "m", "stream": True}

    asked, client_asked = ask_for_usage(body)
    again, client_asked_again = ask_for_usage({**body, "stream_options": {"include_usage": True}})

    assert asked["stream_options"] == {"include_usage": True}
    assert not client_asked
    assert client_asked_again
    assert again["stream_options"] == {"include_usage": True}


RESPONSE_EVENTS = (
    b'event: response.created\ndata: {"type":"response.created","sequence_number":0}\n\n'
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta",'
    b'"delta":"hi","sequence_number":1}\n\n'
    b'event: response.completed\ndata: {"type":"response.completed","sequence_number":2,'
    b'"response":{"usage":{"input_tokens":4,"output_tokens":6,"total_tokens":10}}}\n\n'
)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(st.lists(st.integers(min_value=0, max_value=len(RESPONSE_EVENTS)), max_size=8))
def test_a_responses_stream_passes_through_and_its_usage_is_read(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    ends = [*points, len(RESPONSE_EVENTS)]
    pieces = [RESPONSE_EVENTS[a:b] for a, b in zip([0, *points], ends, strict=True)]
    stream = ResponsesStream()

    out = b"".join(stream.feed(p) for p in pieces) + stream.finish()

    assert out == RESPONSE_EVENTS
    assert stream.usage == {"input": 4, "output": 6}
    assert stream.error is None


def test_a_responses_stream_without_its_last_event_is_a_cut_and_failed_is_a_failure() -> None:
    cut, failed = ResponsesStream(), ResponsesStream()

    cut.feed(RESPONSE_EVENTS.split(b"event: response.completed")[0])
    cut.finish()
    failed.feed(b'event: response.failed\ndata: {"type":"response.failed"}\n\n')

    assert cut.error is not None
    assert cut.error.error is ErrorKind.STREAM_CUT
    assert failed.error is not None
    assert failed.error.status == 500


def test_crlf_framed_events_pass_at_once_and_the_end_is_seen() -> None:
    stream = OpenAIStream(keep_usage=False)
    crlf = STREAM.replace(b"\n\n", b"\r\n\r\n")

    first = stream.feed(crlf[: len(CONTENT) + 2])  # one whole event (+2 for the CRLF framing)
    rest = stream.feed(crlf[len(CONTENT) + 2 :]) + stream.finish()

    assert first == CONTENT.replace(b"\n\n", b"\r\n\r\n")
    assert USAGE.strip() not in rest  # the usage chunk is still kept from the client
    assert stream.usage == {"input": 3, "output": 5}
    assert stream.done


def test_a_partial_event_over_a_mebibyte_breaks_the_stream_instead_of_growing() -> None:
    stream = OpenAIStream(keep_usage=False)

    out = stream.feed(b"data: " + b"x" * (1024 * 1024 + 10))

    assert len(out) > 1024 * 1024  # passed on, not held
    assert stream.error is not None
    assert stream.error.error is ErrorKind.PROTOCOL
