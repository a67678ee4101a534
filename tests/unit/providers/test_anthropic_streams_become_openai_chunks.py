"""An Anthropic Messages stream as OpenAI chunks (AnthropicStreamTranslator). Every chunk
validates as the openai SDK's ChatCompletionChunk and is read with its own SSE decoder; the
chunks add up (the SDK's ChatCompletionStreamState) to what the same message answers unstreamed
(from_anthropic_response of what the anthropic SDK accumulates from the events)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.core.outcome import ErrorKind
from sluice.providers.anthropic import (
    AnthropicStreamTranslator,
    StreamFailure,
    from_anthropic_response,
)
from tests.unit.providers.recorded import ANTHROPIC_EVENTS, ANTHROPIC_STREAM
from tests.unit.providers.support import (
    anthropic_final,
    anthropic_stream,
    openai_final,
    openai_stream,
    sse,
)

CREATED = 1700000000


def translator(include_usage: bool = False) -> AnthropicStreamTranslator:
    return AnthropicStreamTranslator(model="gpt-x", include_usage=include_usage, created=CREATED)


def run(data: bytes | list[bytes], include_usage: bool = False) -> tuple[bytes, Any]:
    t = translator(include_usage)
    pieces = [data] if isinstance(data, bytes) else data
    out = b"".join(t.feed(piece) for piece in pieces) + t.finish()
    return out, t


def test_the_recorded_stream_adds_up_to_the_unstreamed_answer() -> None:
    out, t = run(ANTHROPIC_STREAM, include_usage=True)
    chunks, errors, done = openai_stream(out)
    assert done
    assert not errors
    assert t.done
    assert t.error is None

    events, _ = anthropic_stream(ANTHROPIC_STREAM)
    message = anthropic_final(events).model_dump(mode="json", exclude_none=True)
    unstreamed = from_anthropic_response(message, model="gpt-x", created=CREATED)
    streamed = openai_final([c for c in chunks if c.choices])
    assert streamed.choices[0].message.content == unstreamed["choices"][0]["message"]["content"]
    # the same calls; the streamed arguments are the model's own text, the unstreamed compact
    assert [(c.id, c.function.name, orjson.loads(c.function.arguments))
            for c in streamed.choices[0].message.tool_calls or []] == [
        (c["id"], c["function"]["name"], orjson.loads(c["function"]["arguments"]))
        for c in unstreamed["choices"][0]["message"]["tool_calls"]
    ]  # fmt: skip
    assert streamed.choices[0].finish_reason == "tool_calls"
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.model_dump(exclude_none=True) == unstreamed["usage"]
    assert {c.id for c in chunks} == {"msg_014p7gG3wDgGV9EUtLvnow3U"}
    assert t.usage == {"input": 592, "output": 89}
    assert t.finish_reason == "tool_calls"


def test_the_chunks_say_what_openai_says_in_the_order_it_says_it() -> None:
    out, _ = run(ANTHROPIC_STREAM)
    chunks, _, _ = openai_stream(out)
    deltas = [c.choices[0].delta.model_dump(exclude_none=True) for c in chunks]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Okay"},
        {"content": ", let's check the weather in San Francisco, CA: ☀"},
        {"tool_calls": [{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "type": "function",
                         "function": {"name": "get_weather", "arguments": ""}}]},
        *[{"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
          for piece in ['{"location":', ' "San Fra', 'ncisco, CA", "unit": "fah', 'renheit"}']],
        {"tool_calls": [{"index": 1, "id": "toolu_02", "type": "function",
                         "function": {"name": "get_time", "arguments": ""}}]},
        {"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]},  # no parameters
        {},
    ]  # fmt: skip
    assert [c.choices[0].finish_reason for c in chunks] == [None] * 10 + ["tool_calls"]
    assert all(c.usage is None for c in chunks)  # not asked for


@pytest.mark.parametrize("line_end", [b"\r\n", b"\r"])
def test_every_line_end_the_spec_allows_reads_the_same(line_end: bytes) -> None:
    expected, _ = run(ANTHROPIC_STREAM)
    assert run(ANTHROPIC_STREAM.replace(b"\n", line_end))[0] == expected


def test_events_without_an_event_line_and_comments_read_the_same() -> None:
    bare = b"".join(b": keep-alive\ndata: " + orjson.dumps(e) + b"\n\n" for e in ANTHROPIC_EVENTS)
    assert run(bare)[0] == run(ANTHROPIC_STREAM)[0]


def test_event_types_and_blocks_from_the_future_are_skipped() -> None:
    events = [ANTHROPIC_EVENTS[0],
              {"type": "content_block_start", "index": 0,
               "content_block": {"type": "server_tool_use", "id": "s", "name": "web_search",
                                 "input": {}}},
              {"type": "content_block_delta", "index": 0,
               "delta": {"type": "input_json_delta", "partial_json": '{"q": 1}'}},
              {"type": "content_block_delta", "index": 0, "delta": {"type": "future_delta"}},
              {"type": "content_block_stop", "index": 0},
              {"type": "message_annotation", "what": "new"},
              *ANTHROPIC_EVENTS[-2:]]  # fmt: skip
    out, t = run(sse(events))
    chunks, errors, done = openai_stream(out)
    assert done
    assert not errors
    assert t.error is None
    assert [c.choices[0].delta.model_dump(exclude_none=True) for c in chunks] == [
        {"role": "assistant", "content": ""},
        {},
    ]


def test_an_error_event_becomes_an_openai_error_event_and_a_failure() -> None:
    error = {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    t = translator()
    first = t.feed(sse([*ANTHROPIC_EVENTS[:8], error]))
    assert t.feed(sse(ANTHROPIC_EVENTS[8:])) == b""  # nothing after it
    assert t.finish() == b""
    chunks, errors, done = openai_stream(first)
    assert [c.choices[0].delta.content for c in chunks] == ["", "Okay"]
    assert errors == [{"message": "Overloaded", "type": "overloaded_error", "param": None,
                       "code": "overloaded_error"}]  # fmt: skip
    assert not done
    assert not t.done
    assert t.error == StreamFailure("Overloaded", status=529, error_type="overloaded_error")


def test_an_error_before_anything_else_is_a_failure_too() -> None:
    error = {"type": "error", "error": {"type": "api_error", "message": "Internal"}}
    out, t = run(sse([error]))
    assert openai_stream(out)[1][0]["type"] == "api_error"
    assert t.error.status == 500
    assert t.usage is None


def cut(out: bytes, t: AnthropicStreamTranslator) -> dict[str, Any]:
    _chunks, errors, done = openai_stream(out)
    assert not done
    assert not t.done
    assert t.error is not None
    assert len(errors) == 1
    return errors[0]


def test_a_stream_that_ends_before_message_stop_is_a_cut() -> None:
    out, t = run(sse(ANTHROPIC_EVENTS[:-1]))
    assert cut(out, t)["type"] == "stream_cut"
    assert t.error.error is ErrorKind.STREAM_CUT
    assert t.usage == {"input": 592, "output": 89}  # what was said before the cut


def test_a_last_event_without_its_blank_line_is_not_read() -> None:
    out, t = run(ANTHROPIC_STREAM[:-1])
    cut(out, t)
    assert t.error.error is ErrorKind.STREAM_CUT


@pytest.mark.parametrize(
    "events",
    [
        [{"type": "content_block_start", "index": 0,
          "content_block": {"type": "text", "text": ""}}],  # before message_start
        [ANTHROPIC_EVENTS[0], ANTHROPIC_EVENTS[0]],
        [ANTHROPIC_EVENTS[0], {"type": "content_block_delta", "index": 7,
                               "delta": {"type": "text_delta", "text": "x"}}],
        [ANTHROPIC_EVENTS[0], *ANTHROPIC_EVENTS[5:7], ANTHROPIC_EVENTS[5]],  # started twice
        [ANTHROPIC_EVENTS[0], ANTHROPIC_EVENTS[10],
         {"type": "content_block_delta", "index": 2,
          "delta": {"type": "input_json_delta", "partial_json": '{"location": "Par'}},
         ANTHROPIC_EVENTS[16]],  # the tool's input ends as invalid JSON
        [ANTHROPIC_EVENTS[0], ANTHROPIC_EVENTS[10],
         {"type": "content_block_delta", "index": 2,
          "delta": {"type": "input_json_delta", "partial_json": "[1, 2]"}}, *ANTHROPIC_EVENTS[-3:]],
        [ANTHROPIC_EVENTS[0], ANTHROPIC_EVENTS[10],
         {"type": "content_block_delta", "index": 2, "delta": {"type": "text_delta", "text": "x"}}],
        [{"type": "message_start", "message": {"id": "m"}}],
        [{"type": "message_start", "message": {"id": "m", "usage": {"input_tokens": "many"}}}],
        [ANTHROPIC_EVENTS[0], {"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                               "usage": {"output_tokens": -3}}],
    ],
)  # fmt: skip
def test_a_stream_that_breaks_its_format_is_a_protocol_failure(events: list[Any]) -> None:
    out, t = run(sse(events))
    assert cut(out, t)["type"] == "upstream_format_error"
    assert t.error.error is ErrorKind.PROTOCOL
    assert t.usage in (None, {"input": 592, "output": 2})  # what was valid before


@pytest.mark.parametrize(
    "data",
    [
        b"event: message_start\ndata: {not json\n\n",
        b"data: [1, 2]\n\n",
        b"data: \xff\xfe\n\n",
        b"\x80\r",
    ],
)
def test_bytes_that_are_not_events_are_a_protocol_failure(data: bytes) -> None:
    out, t = run(data)
    cut(out, t)
    assert t.error.error is ErrorKind.PROTOCOL


# Properties.

FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@FUZZ
@given(st.lists(st.integers(0, 10**6), max_size=40), st.booleans())
def test_any_split_of_the_recorded_stream_gives_the_same_bytes(
    cuts: list[int], include_usage: bool
) -> None:
    whole, _ = run(ANTHROPIC_STREAM, include_usage)
    assert run(split(ANTHROPIC_STREAM, cuts), include_usage)[0] == whole


def test_a_stream_fed_one_byte_at_a_time_gives_the_same_bytes() -> None:
    pieces = [ANTHROPIC_STREAM[i : i + 1] for i in range(len(ANTHROPIC_STREAM))]
    assert run(pieces)[0] == run(ANTHROPIC_STREAM)[0]


junk_events = st.sampled_from([
    b"data: {bad json\n\n",
    b"event: mystery\ndata: {\"type\": \"mystery\"}\n\n",
    b": comment\n\n",
    b"event: ping\ndata: {\"type\": \"ping\"}\n\n",
    sse([{"type": "content_block_delta", "index": 2,
          "delta": {"type": "input_json_delta", "partial_json": "{\"oops"}}]),
    sse([{"type": "content_block_stop", "index": 9}]),
    sse([{"type": "error", "error": {"type": "api_error", "message": "x"}}]),
    b"\xff\n\n",
    b"data: 12\n\n",
])  # fmt: skip


@st.composite
def broken_streams(draw: st.DrawFn) -> list[bytes]:
    events = [sse([e]) for e in ANTHROPIC_EVENTS]
    for _ in range(draw(st.integers(0, 3))):
        events.insert(draw(st.integers(0, len(events))), draw(junk_events))
    data = b"".join(events)
    data = data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data
    return split(data, draw(st.lists(st.integers(0, 10**6), max_size=8)))


@FUZZ
@given(broken_streams(), st.booleans())
def test_a_broken_stream_ends_in_a_failure_or_a_clean_finish_never_an_exception(
    pieces: list[bytes], include_usage: bool
) -> None:
    out, t = run(pieces, include_usage)
    _chunks, errors, done = openai_stream(out)
    assert t.usage is None or set(t.usage) == {"input", "output"}
    if t.done:
        assert done
        assert not errors
        assert t.error is None
    else:
        assert isinstance(t.error, StreamFailure)
        assert not done
        assert len(errors) == 1
        assert t.error.status is not None or t.error.error in (ErrorKind.STREAM_CUT,
                                                               ErrorKind.PROTOCOL)  # fmt: skip
    assert t.feed(ANTHROPIC_STREAM) == b""
    assert t.finish() == b""


@FUZZ
@given(st.lists(st.binary(max_size=64), max_size=6))
def test_random_bytes_never_raise(pieces: list[bytes]) -> None:
    out, t = run(pieces)
    openai_stream(out)
    assert t.usage is None or set(t.usage) == {"input", "output"}
    assert t.error is not None  # no random bytes make a whole Anthropic stream
