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

__all__ = [
    "OPENAI",
    "OPENAI_COMPATIBLE",
    "OpenAIStream",
    "ResponsesStream",
    "ask_for_usage",
    "responses_error_event",
]

OPENAI = Provider("openai", key_header="Authorization", key_format="Bearer {key}")
OPENAI_COMPATIBLE = Provider(
    "openai-compatible", key_header="Authorization", key_format="Bearer {key}"
)

_NO_CHOICES = re.compile(rb'"choices"\s*:\s*\[\s*\]')
_EVENT_END = b"\n\n"
_EVENT_ENDS = (b"\n\n", b"\r\n\r\n", b"\r\r")  # SSE lines end in LF, CRLF or CR
MAX_EVENT_BYTES = 1024 * 1024  # a partial event held back; past it the stream is broken


def _whole_events(pending: bytes, data: bytes) -> tuple[bytes, bytes, bool]:
    """``pending + data`` split into the whole events (b"" if none yet), the partial event
    after them, and whether that partial event is over MAX_EVENT_BYTES."""
    if pending:
        data = pending + data
    if data.endswith(_EVENT_ENDS):  # the common case: upstreams write whole events
        return data, b"", False
    end = max(data.rfind(e) + len(e) if data.rfind(e) >= 0 else -1 for e in _EVENT_ENDS)
    whole, rest = (data[:end], data[end:]) if end > 0 else (b"", data)
    return whole, rest, len(rest) > MAX_EVENT_BYTES


def _events(whole: bytes) -> list[bytes]:
    """The events of whole ones, each with its end (LF or CRLF framing)."""
    end = b"\r\n\r\n" if b"\r\n\r\n" in whole else _EVENT_END
    return [event + end for event in whole.split(end) if event]


def ask_for_usage(body: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """The body with ``stream_options.include_usage`` set, and whether the client had asked."""
    options = body.get("stream_options")
    asked = isinstance(options, dict) and options.get("include_usage") is True
    if asked:
        return body, True
    merged = {**(options if isinstance(options, dict) else {}), "include_usage": True}
    return {**body, "stream_options": merged}, False


class _PassedThrough:
    """An SSE stream passed through whole events at a time: a partial event at the end of a
    read waits for the rest, so an event is never split between two decisions, and one over
    MAX_EVENT_BYTES breaks the stream instead of growing. Subclasses read the events."""

    def __init__(self) -> None:
        self.usage: dict[str, int | None] | None = None
        self.error: StreamFailure | None = None
        self._pending = b""

    def feed(self, data: bytes) -> bytes:
        data, self._pending, too_long = _whole_events(self._pending, data)
        if too_long:
            self.error = StreamFailure("an event over 1 MiB", error=ErrorKind.PROTOCOL)
            data, self._pending = data + self._pending, b""
            return data
        return self._read(data)

    def _read(self, events: bytes) -> bytes:
        """What to pass on of these whole events."""
        return events


class OpenAIStream(_PassedThrough):
    """An OpenAI SSE stream, passed through event by event: its usage read from the usage chunk
    (dropped unless ``keep_usage``), its end (``data: [DONE]``) noticed."""

    def __init__(self, *, keep_usage: bool) -> None:
        super().__init__()
        self.keep_usage = keep_usage
        self._done = False

    def _read(self, data: bytes) -> bytes:
        if (b"[]" in data or b"[ ]" in data) and _NO_CHOICES.search(data):
            data = self._usage(data)
        if data.endswith((b"[DONE]\n\n", b"[DONE]\r\n\r\n")):
            self._done = True
        return data

    @property
    def done(self) -> bool:
        """``data: [DONE]`` came: the stream is over."""
        return self._done

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
        for event in _events(events):
            if _NO_CHOICES.search(event) and (usage := _usage_of(event)) is not None:
                self.usage = usage
                if not self.keep_usage:
                    continue
            kept.append(event)
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


_TERMINAL = re.compile(rb"response\.(completed|incomplete|failed)|\"type\"\s*:\s*\"error\"")


class ResponsesStream(_PassedThrough):
    """An OpenAI Responses API stream (``event: response.*``), passed through as it comes: its
    end (``response.completed`` or ``response.incomplete``; ``response.failed`` or an
    ``error`` event is a failure) noticed and the final usage read from it."""

    def __init__(self) -> None:
        super().__init__()
        self._ended = False

    def _read(self, data: bytes) -> bytes:
        if _TERMINAL.search(data):
            for event in _events(data):
                self._terminal(event)
        return data

    @property
    def done(self) -> bool:
        return self._ended

    def finish(self) -> bytes:
        rest, self._pending = self._pending, b""
        if not self._ended and self.error is None:
            self.error = StreamFailure(
                "ended without response.completed", error=ErrorKind.STREAM_CUT
            )
        return rest

    def _terminal(self, event: bytes) -> None:
        _, _, payload = event.partition(b"data:")
        try:
            data = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return
        kind = data.get("type") if isinstance(data, dict) else None
        if kind in ("response.completed", "response.incomplete"):
            self._ended = True
            response = data.get("response")
            usage = response.get("usage") if isinstance(response, dict) else None
            if isinstance(usage, dict):
                self.usage = {"input": _int(usage, "input_tokens"),
                              "output": _int(usage, "output_tokens")}  # fmt: skip
        elif kind in ("response.failed", "error"):
            self.error = StreamFailure(f"the upstream's stream says {kind}", status=500)


def _int(mapping: dict[str, Any], name: str) -> int | None:
    value = mapping.get(name)
    return value if isinstance(value, int) and 0 <= value < 10**15 else None


def responses_error_event(message: str) -> bytes:
    """The event that ends a Responses stream broken after its first byte."""
    error = {"type": "error", "code": "upstream_error", "message": message, "param": None}
    return b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"
