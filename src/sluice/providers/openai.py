"""OpenAI and OpenAI-compatible servers (vLLM, llama.cpp, ...): ``Authorization: Bearer``, and
OpenAI's streams passed through as they come, with their usage read on the way.

A chat stream's token usage comes in a last chunk with no choices, and only when the request
asks for it (``stream_options.include_usage``). The proxy always asks, so every stream is
counted; :class:`OpenAIStream` reads that chunk and, when the client itself did not ask, keeps
it from the client, who then sees the stream it asked for.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from sluice.core import ErrorKind
from sluice.providers.base import Provider, StreamFailure

__all__ = ["OPENAI", "OPENAI_COMPATIBLE", "OpenAIStream", "ask_for_usage"]

OPENAI = Provider("openai", key_header="Authorization", key_format="Bearer {key}")
OPENAI_COMPATIBLE = Provider(
    "openai-compatible", key_header="Authorization", key_format="Bearer {key}"
)

_NO_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_EVENT_END = b"\n\n"


def ask_for_usage(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The body with ``stream_options.include_usage`` set, and whether the client had asked."""
    options = body.get("stream_options")
    asked = isinstance(options, dict) and options.get("include_usage") is True
    if asked:
        return body, True
    merged = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return {**body, "stream_options": merged}, False


class OpenAIStream:
    """An OpenAI SSE stream, passed through event by event: its usage read from the usage chunk
    (dropped unless ``keep_usage``), its end (``data: [DONE]``) noticed. A partial event at the
    end of a read waits for the rest, so an event is never split between two decisions."""

    def __init__(self, *, keep_usage: bool) -> None:
        self.keep_usage = keep_usage
        self.usage: dict[str, int | None] | None = None
        self.error: StreamFailure | None = None
        self._pending = b""
        self._done = False

    def feed(self, data: bytes) -> bytes:
        if self._pending:
            data, self._pending = self._pending + data, b""
        if not data.endswith(_EVENT_END):  # rare: upstreams write whole events
            end = data.rfind(_EVENT_END)
            if end < 0:
                self._pending = data
                return b""
            data, self._pending = data[: end + 2], data[end + 2 :]
        if (b"[]" in data or b"[ ]" in data) and _NO_CHOICES.search(data):
            data = self._usage(data)
        if data.endswith(b"[DONE]\n\n"):
            self._done = True
        return data

    def finish(self) -> bytes:
        """The upstream closed: what is left, and a cut unless ``[DONE]`` came."""
        rest, self._pending = self._pending, b""
        if b"[DONE]" in rest:
            self._done = True
        if not self._done:
            self.error = StreamFailure("ended without [DONE]", error=ErrorKind.STREAM_CUT)
        return rest

    def _usage(self, events: bytes) -> bytes:
        kept: list[bytes] = []
        for event in events.split(_EVENT_END):
            if not event:
                continue
            if _NO_CHOICES.search(event) and (usage := _usage_of(event)) is not None:
                self.usage = usage
                if not self.keep_usage:
                    continue
            kept.append(event + _EVENT_END)
        return b"".join(kept)


def _usage_of(event: bytes) -> dict[str, int | None] | None:
    """The token counts of a usage chunk (``data: {..., "usage": {...}}``), if it is one."""
    _, _, payload = event.partition(b"data:")
    try:
        chunk = orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None
    usage = chunk.get("usage") if isinstance(chunk, dict) else None
    if not isinstance(usage, dict):
        return None

    def count(name: str) -> int | None:
        value = usage.get(name)
        return value if isinstance(value, int) and 0 <= value < 10**15 else None

    return {"input": count("prompt_tokens"), "output": count("completion_tokens")}
