"""Streams as the two APIs send them: an Anthropic Messages stream with thinking, text, a ping
and a tool call whose input arrives in pieces; an OpenAI stream with text, two parallel tool
calls and the usage chunk."""

from __future__ import annotations

from typing import Any

from tests.unit.providers.support import chunks_sse, sse

ANTHROPIC_EVENTS: list[dict[str, Any]] = [
    {"type": "message_start", "message": {
        "id": "msg_014p7gG3wDgGV9EUtLvnow3U", "type": "message", "role": "assistant",
        "model": "claude-sonnet-4-5", "content": [], "stop_reason": None, "stop_sequence": None,
        "usage": {"input_tokens": 472, "output_tokens": 2, "cache_creation_input_tokens": 20,
                  "cache_read_input_tokens": 100}}},
    {"type": "content_block_start", "index": 0,
     "content_block": {"type": "thinking", "thinking": "", "signature": ""}},
    {"type": "content_block_delta", "index": 0,
     "delta": {"type": "thinking_delta", "thinking": "The user wants the weather."}},
    {"type": "content_block_delta", "index": 0,
     "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM"}},
    {"type": "content_block_stop", "index": 0},
    {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
    {"type": "ping"},
    {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "Okay"}},
    {"type": "content_block_delta", "index": 1,
     "delta": {"type": "text_delta", "text": ", let's check the weather in San Francisco, CA: ☀"}},
    {"type": "content_block_stop", "index": 1},
    {"type": "content_block_start", "index": 2, "content_block": {
        "type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6", "name": "get_weather",
        "input": {}}},
    {"type": "content_block_delta", "index": 2,
     "delta": {"type": "input_json_delta", "partial_json": ""}},
    {"type": "content_block_delta", "index": 2,
     "delta": {"type": "input_json_delta", "partial_json": '{"location":'}},
    {"type": "content_block_delta", "index": 2,
     "delta": {"type": "input_json_delta", "partial_json": ' "San Fra'}},
    {"type": "content_block_delta", "index": 2,
     "delta": {"type": "input_json_delta", "partial_json": 'ncisco, CA", "unit": "fah'}},
    {"type": "content_block_delta", "index": 2,
     "delta": {"type": "input_json_delta", "partial_json": 'renheit"}'}},
    {"type": "content_block_stop", "index": 2},
    {"type": "content_block_start", "index": 3, "content_block": {
        "type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}}},
    {"type": "content_block_stop", "index": 3},
    {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None},
     "usage": {"output_tokens": 89}},
    {"type": "message_stop"},
]  # fmt: skip
ANTHROPIC_STREAM = sse(ANTHROPIC_EVENTS)


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> Any:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    return {"id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT", "object": "chat.completion.chunk",
            "created": 1741569952, "model": "gpt-4.1-2025-04-14", "choices": choices, **extra}  # fmt: skip


OPENAI_CHUNKS: list[dict[str, Any]] = [
    _chunk({"role": "assistant", "content": "", "refusal": None}),
    _chunk({"content": "Checking"}),
    _chunk({"content": " both."}),
    _chunk({"tool_calls": [{"index": 0, "id": "call_DdmO9pD3xa9XTPNJ32zg2hcA", "type": "function",
                            "function": {"name": "get_weather", "arguments": ""}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"location"'}}]}),
    _chunk({"tool_calls": [{"index": 0, "function": {"arguments": ': "Paris, France"}'}}]}),
    _chunk({"tool_calls": [{"index": 1, "id": "call_2", "type": "function",
                            "function": {"name": "get_time", "arguments": "{}"}}]}),
    _chunk({}, "tool_calls"),
    _chunk(None, usage={"prompt_tokens": 120, "completion_tokens": 30, "total_tokens": 150,
                        "prompt_tokens_details": {"cached_tokens": 64, "audio_tokens": 0},
                        "completion_tokens_details": {"reasoning_tokens": 0}}),
]  # fmt: skip
OPENAI_STREAM = chunks_sse(OPENAI_CHUNKS)
