"""An OpenAI chunk stream as Anthropic Messages events (OpenAIStreamTranslator, for the coming
/v1/messages endpoint). Every event is read with the anthropic SDK's own SSE decoder and
validates as its RawMessageStreamEvent; the events add up (the SDK's accumulate_event) to what
the same completion answers unstreamed (to_anthropic_response)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sluice.core.outcome import ErrorKind
from sluice.providers.anthropic import OpenAIStreamTranslator, to_anthropic_response
from tests.unit.providers.recorded import OPENAI_CHUNKS, OPENAI_STREAM
from tests.unit.providers.support import (
    anthropic_final,
    anthropic_stream,
    chunks_sse,
    openai_final,
    openai_stream,
)


def run(data: bytes | list[bytes]) -> tuple[bytes, OpenAIStreamTranslator]:
    t = OpenAIStreamTranslator(model="claude-x")
    pieces = [data] if isinstance(data, bytes) else data
    out = b"".join(t.feed(piece) for piece in pieces) + t.finish()
    return out, t


def test_the_recorded_stream_adds_up_to_the_unstreamed_answer() -> None:
    out, t = run(OPENAI_STREAM)
    events, errors = anthropic_stream(out)
    assert not errors
    assert t.done
    assert t.error is None
    streamed = anthropic_final(events).model_dump(mode="json", exclude_none=True)

    chunks, _, _ = openai_stream(OPENAI_STREAM)
    completion = openai_final(chunks).model_dump(mode="json", exclude_none=True)
    completion["usage"] = OPENAI_CHUNKS[-1]["usage"]
    unstreamed = to_anthropic_response(completion, model="claude-x")
    assert streamed == {k: v for k, v in unstreamed.items() if v is not None}
    assert t.usage == {"input": 120, "output": 30}
    assert t.stop_reason == "tool_use"


def test_the_events_are_anthropics_in_anthropics_order() -> None:
    out, _ = run(OPENAI_STREAM)
    events, _ = anthropic_stream(out)
    assert [(e.type, getattr(e, "index", None)) for e in events] == [
        ("message_start", None),
        ("content_block_start", 0),
        ("content_block_delta", 0),
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
        ("content_block_delta", 1),
        ("content_block_stop", 1),
        ("content_block_start", 2),
        ("content_block_delta", 2),
        ("content_block_stop", 2),
        ("message_delta", None),
        ("message_stop", None),
    ]
    assert events[0].message.usage.input_tokens == 0  # OpenAI says it at the end
    usage = events[-2].usage.model_dump(exclude_none=True)
    assert usage == {"input_tokens": 56, "output_tokens": 30, "cache_read_input_tokens": 64,
                     "cache_creation_input_tokens": 0, "output_tokens_details": {
                         "thinking_tokens": 0}}  # fmt: skip


def test_a_stream_without_a_usage_chunk_reports_zero_output() -> None:
    out, t = run(chunks_sse(OPENAI_CHUNKS[:-1]))
    events, _ = anthropic_stream(out)
    assert events[-2].usage.output_tokens == 0
    assert t.usage is None
    assert t.done


def test_a_refusal_is_text_with_stop_reason_refusal() -> None:
    chunks = [{**OPENAI_CHUNKS[0], "choices": [{"index": 0, "delta": d, "finish_reason": f}]}
              for d, f in [({"refusal": "I can't help with that."}, None), ({}, "stop")]]  # fmt: skip
    out, _ = run(chunks_sse(chunks))
    message = anthropic_final(anthropic_stream(out)[0])
    assert message.stop_reason == "refusal"
    assert message.content[0].model_dump() == {"type": "text", "text": "I can't help with that.",
                                               "citations": None}  # fmt: skip


def test_an_error_chunk_becomes_an_anthropic_error_event_and_a_failure() -> None:
    error = {"error": {"message": "Rate limit reached", "type": "requests",
                       "code": "rate_limit_exceeded"}}  # fmt: skip
    out, t = run(chunks_sse([*OPENAI_CHUNKS[:3], error]))
    events, errors = anthropic_stream(out)
    assert errors == [{"type": "error", "error": {"type": "rate_limit_error",
                                                  "message": "Rate limit reached"}}]  # fmt: skip
    assert t.error is not None
    assert t.error.status == 429
    assert events[-1].type == "content_block_delta"  # nothing closed after the error


def failed(out: bytes, t: OpenAIStreamTranslator) -> None:
    events, errors = anthropic_stream(out)
    assert len(errors) == 1
    assert not t.done
    assert t.error is not None
    assert all(e.type != "message_stop" for e in events)


def test_a_stream_that_ends_before_done_is_a_cut() -> None:
    out, t = run(chunks_sse(OPENAI_CHUNKS, done=False))
    failed(out, t)
    assert t.error.error is ErrorKind.STREAM_CUT
    assert t.usage == {"input": 120, "output": 30}


def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
    return {**OPENAI_CHUNKS[0], "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


@pytest.mark.parametrize(
    "chunks",
    [
        [chunk({"content": "no finish reason"})],
        [],
        [chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"arguments": "{}"}}]})],
        [chunk({"tool_calls": [{"index": 0, "id": "a", "function": {"name": "f"}}]}),
         chunk({"tool_calls": [{"index": 1, "id": "b", "function": {"name": "g"}}]}),
         chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]})],
        [chunk({"tool_calls": [{"index": 0, "id": "a",
                                "function": {"name": "f", "arguments": '{"x": '}}]}),
         chunk({}, "tool_calls")],
        [chunk({"tool_calls": "x"})],
        [{"choices": {}}],
    ],
)  # fmt: skip
def test_a_stream_that_breaks_its_format_is_a_protocol_failure(chunks: list[Any]) -> None:
    out, t = run(chunks_sse(chunks))
    failed(out, t)
    assert t.error.error is ErrorKind.PROTOCOL


def test_tool_calls_without_an_index_or_an_id_are_followed_leniently() -> None:
    chunks = [chunk({"tool_calls": [{"function": {"name": "f", "arguments": '{"a"'}}]}),
              chunk({"tool_calls": [{"function": {"arguments": ": 1}"}}]}),
              chunk({}, "tool_calls")]  # fmt: skip
    out, t = run(chunks_sse(chunks))
    message = anthropic_final(anthropic_stream(out)[0])
    assert t.done
    assert message.content[0].model_dump(exclude_none=True) == {
        "type": "tool_use", "id": "toolu_sluice_0", "name": "f", "input": {"a": 1}}  # fmt: skip


FUZZ = settings(max_examples=200, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])  # fmt: skip


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


@FUZZ
@given(st.lists(st.integers(0, 10**6), max_size=40))
def test_any_split_of_the_recorded_stream_gives_the_same_bytes(cuts: list[int]) -> None:
    assert run(split(OPENAI_STREAM, cuts))[0] == run(OPENAI_STREAM)[0]


junk = st.sampled_from([
    b"data: {bad json\n\n", b": keep-alive\n\n", b"data: {\"object\": \"x\"}\n\n",
    chunks_sse([chunk({"tool_calls": [{"index": 0, "function": {"arguments": "]"}}]})],
               done=False),
    chunks_sse([{"error": {"message": "boom", "type": "server_error"}}], done=False),
    b"\xff\n\n", b"data: [DONE]\n\n",
])  # fmt: skip


@st.composite
def broken_streams(draw: st.DrawFn) -> list[bytes]:
    pieces = [chunks_sse([c], done=False) for c in OPENAI_CHUNKS] + [b"data: [DONE]\n\n"]
    for _ in range(draw(st.integers(0, 3))):
        pieces.insert(draw(st.integers(0, len(pieces))), draw(junk))
    data = b"".join(pieces)
    data = data[: draw(st.integers(0, len(data)))] if draw(st.booleans()) else data
    return split(data, draw(st.lists(st.integers(0, 10**6), max_size=8)))


@FUZZ
@given(broken_streams())
def test_a_broken_stream_ends_in_a_failure_or_a_clean_finish_never_an_exception(
    pieces: list[bytes],
) -> None:
    out, t = run(pieces)
    events, errors = anthropic_stream(out)
    assert t.usage is None or set(t.usage) == {"input", "output"}
    if t.done:
        assert not errors
        assert t.error is None
        assert events[-1].type == "message_stop"
    else:
        assert t.error is not None
        assert len(errors) == 1
    assert t.feed(OPENAI_STREAM) == b""
    assert t.finish() == b""
