"""An Anthropic Messages stream passed through to an Anthropic client as it comes: its end
(``message_stop``) noticed, its usage read (``message_start`` and ``message_delta``), an
``error`` event judged by the status its type stands for."""

from __future__ import annotations

import orjson

from sluice.core import ErrorKind
from sluice.providers.anthropic_errors import status_for_error_type
from sluice.providers.base import StreamFailure
from sluice.providers.translation import SSEDecoder, UpstreamFormatError

__all__ = ["AnthropicPassthrough", "anthropic_error_event"]


def anthropic_error_event(message: str, *, error_type: str = "api_error") -> bytes:
    """The event that ends an Anthropic stream broken after its first byte."""
    body = {"type": "error", "error": {"type": error_type, "message": message}}
    return b"event: error\ndata: " + orjson.dumps(body) + b"\n\n"


class AnthropicPassthrough:
    """Bytes out as they came in; events read on the side for the end, usage and errors."""

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self._input: int | None = None
        self._output: int | None = None
        self._stopped = False
        self.error: StreamFailure | None = None

    @property
    def usage(self) -> dict[str, int | None] | None:
        if self._input is None and self._output is None:
            return None
        return {"input": self._input, "output": self._output}

    @property
    def done(self) -> bool:
        return self._stopped

    def feed(self, data: bytes) -> bytes:
        try:
            events = self._decoder.feed(data)
        except UpstreamFormatError as e:
            self.error = StreamFailure(str(e), error=ErrorKind.PROTOCOL)
            return data
        for event in events:
            self._read(event.event, event.data)
        return data

    def finish(self) -> bytes:
        if not self._stopped and self.error is None:
            self.error = StreamFailure(
                "the upstream's stream ended before message_stop", error=ErrorKind.STREAM_CUT
            )
        return b""

    def _read(self, kind: str | None, data: str) -> None:
        if kind == "message_stop":
            self._stopped = True
            return
        if kind not in ("message_start", "message_delta", "error"):
            return
        try:
            payload = orjson.loads(data)
        except orjson.JSONDecodeError:
            return
        if not isinstance(payload, dict):
            return
        if kind == "error":
            error = payload.get("error")
            error = error if isinstance(error, dict) else {}
            error_type = str(error.get("type") or "api_error")
            message = str(error.get("message") or error_type)
            status = status_for_error_type(error_type)
            self.error = StreamFailure(message, status=status, error_type=error_type)
            return
        if kind == "message_start":
            message_ = payload.get("message")
            usage = message_.get("usage") if isinstance(message_, dict) else None
        else:
            usage = payload.get("usage")
        if isinstance(usage, dict):
            self._input = _count(usage, "input_tokens", self._input)
            self._output = _count(usage, "output_tokens", self._output)


def _count(usage: dict[str, object], name: str, previous: int | None) -> int | None:
    value = usage.get(name)
    return value if isinstance(value, int) and 0 <= value < 10**15 else previous
