"""What every translation between wire formats shares: its two errors, and SSE framing.

- :class:`TranslationError`: a client's request that cannot be said in the upstream's format
  without changing what it asks for. A 400 to the client; ``param`` names the parameter.
- :class:`UpstreamFormatError`: an upstream answered something its own format does not allow
  (a body that is not a Message, a stream that breaks its own rules). The upstream's fault.
- :class:`SSEDecoder`: server-sent events from bytes split anywhere, as the WHATWG spec reads
  them (lines end in CR, LF or CRLF; ``data`` lines join with LF; comments and unknown fields
  are skipped; an event the stream does not finish with a blank line is never dispatched).

Pure: nothing here does I/O.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from sluice.errors import ConfigurationError, SluiceError

__all__ = [
    "DEFAULT_MAX_EVENT_BYTES",
    "SSEDecoder",
    "SSEEvent",
    "TranslationError",
    "UpstreamFormatError",
    "dumps",
    "loads_object",
]

# The most one event may hold before it is complete: bounds what a stream that never sends a
# line end can make the decoder keep.
DEFAULT_MAX_EVENT_BYTES = 16 * 1024 * 1024


class TranslationError(ConfigurationError):
    """A request has something the upstream's format cannot say without changing the answer.

    ``param`` is the parameter's path in the client's request (``messages[2].content[0]``),
    for the ``param`` field of the 400 the client gets.
    """

    def __init__(self, param: str, message: str) -> None:
        super().__init__(f"{param}: {message}")
        self.param = param
        self.reason = message

    def openai_body(self) -> dict[str, Any]:
        """The 400's body for an OpenAI client."""
        return {"error": {"message": str(self), "type": "invalid_request_error",
                          "param": self.param, "code": "unsupported_parameter"}}  # fmt: skip

    def anthropic_body(self) -> dict[str, Any]:
        """The 400's body for an Anthropic client."""
        return {"type": "error", "error": {"type": "invalid_request_error", "message": str(self)}}


class UpstreamFormatError(SluiceError):
    """An upstream's answer does not follow its own wire format."""


def dumps(value: Any) -> bytes:
    """Compact JSON, as every translated body is written."""
    return orjson.dumps(value)


def loads_object(data: bytes | str, what: str) -> dict[str, Any]:
    """A JSON object, or UpstreamFormatError naming ``what`` it was meant to be."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise UpstreamFormatError(f"{what} is not JSON: {e}") from None
    if not isinstance(value, dict):
        raise UpstreamFormatError(f"{what} is not a JSON object")
    return value


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One dispatched event: its ``event`` field (None without one) and its joined data."""

    event: str | None
    data: str


_LINE_END = re.compile(rb"\r\n|\r|\n")


class SSEDecoder:
    """Server-sent events from a byte stream fed in pieces of any size.

    :meth:`feed` answers the events the new bytes complete. Bytes that are not UTF-8, or an
    event over ``max_event_bytes``, raise UpstreamFormatError (and the decoder is spent).
    """

    def __init__(self, *, max_event_bytes: int = DEFAULT_MAX_EVENT_BYTES) -> None:
        self._buffer = b""
        self._event: str | None = None
        self._data: list[str] = []
        self._pending = 0  # bytes of the event being read, its completed lines included
        self._max = max_event_bytes

    def feed(self, data: bytes) -> list[SSEEvent]:
        """The events completed by ``data``."""
        buffer = self._buffer + data if self._buffer else data
        events: list[SSEEvent] = []
        start = 0
        end = len(buffer)
        while start < end:
            match = _LINE_END.search(buffer, start)
            if match is None:
                break
            if match.group() == b"\r" and match.end() == end:
                break  # a CR last: the LF of a CRLF may be in the next piece
            self._pending += match.end() - start
            self._line(buffer[start : match.start()], events)
            start = match.end()
        self._buffer = buffer[start:]
        if self._pending + len(self._buffer) > self._max:
            raise UpstreamFormatError(f"an event is over {self._max} bytes")
        return events

    def end(self) -> list[SSEEvent]:
        """At the end of the stream: the event a last CR completes (none otherwise; an event
        without its blank line is never dispatched)."""
        buffer, self._buffer = self._buffer, b""
        events: list[SSEEvent] = []
        if buffer.endswith(b"\r"):  # held back in case an LF followed: the line it ends
            self._line(buffer[:-1], events)
        return events

    def _line(self, raw: bytes, events: list[SSEEvent]) -> None:
        if not raw:
            if self._data:  # an event without data is not dispatched (the spec)
                events.append(SSEEvent(self._event, "\n".join(self._data)))
            self._event = None
            self._data = []
            self._pending = 0
            return
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise UpstreamFormatError("an event stream line is not UTF-8") from None
        if line.startswith(":"):
            return
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
