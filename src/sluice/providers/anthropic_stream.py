"""Streams between Anthropic's Messages and OpenAI's Chat Completions, both ways, as stateful
translators of bytes: :meth:`feed` takes the upstream's bytes split anywhere and answers the
client's bytes ready to write; :meth:`finish` ends the stream when the upstream has closed it.

- :class:`AnthropicStreamTranslator`: an Anthropic SSE stream as OpenAI chunks (``data:``
  lines, ``data: [DONE]`` at the end).
- :class:`OpenAIStreamTranslator`: an OpenAI chunk stream as Anthropic's SSE events
  (``message_start``, ``content_block_start/delta/stop``, ``message_delta``, ``message_stop``).

A stream that ends badly (an upstream ``error`` event, bytes that break the format, an end
before the last event) makes the translator write one error event in the client's format and
nothing after it; :attr:`error` then says why (a :class:`StreamFailure`). A translator never
raises on what the upstream sends.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from sluice.core.outcome import ErrorKind
from sluice.providers.anthropic_errors import (
    from_anthropic_error,
    status_for_error_type,
    to_anthropic_error,
)
from sluice.providers.anthropic_response import (
    anthropic_stop_reason,
    anthropic_usage,
    openai_finish_reason,
    openai_usage,
)
from sluice.providers.base import StreamFailure
from sluice.providers.translation import (
    SSEDecoder,
    SSEEvent,
    UpstreamFormatError,
    dumps,
    loads_object,
)

__all__ = ["AnthropicStreamTranslator", "OpenAIStreamTranslator", "StreamFailure"]

_DONE = b"data: [DONE]\n\n"


class _Translator:
    """Feeding, finishing and failing; subclasses translate one event at a time."""

    def __init__(self) -> None:
        self._decoder = SSEDecoder()
        self._over = False
        self._done = False
        self._failure: StreamFailure | None = None

    @property
    def done(self) -> bool:
        """Whether the stream ended well (its last event seen)."""
        return self._done

    @property
    def error(self) -> StreamFailure | None:
        """Why the stream ended badly, once it has; None otherwise."""
        return self._failure

    def feed(self, data: bytes) -> bytes:
        """The client's bytes for these upstream bytes (b"" once the stream is over)."""
        if self._over:
            return b""
        try:
            events = self._decoder.feed(data)
        except UpstreamFormatError as e:
            return self._fail(StreamFailure(str(e), error=ErrorKind.PROTOCOL))
        return self._events(events)

    def finish(self) -> bytes:
        """The upstream closed the stream: b"" if it had ended well, else the error event (a
        cut: :attr:`error` is set)."""
        if self._over:
            return b""
        try:
            events = self._decoder.end()
        except UpstreamFormatError as e:
            return self._fail(StreamFailure(str(e), error=ErrorKind.PROTOCOL))
        out = self._events(events)
        if self._ended():  # a last CR completed the last event
            return out
        failure = StreamFailure(
            "the upstream's stream ended before its last event", error=ErrorKind.STREAM_CUT
        )
        return out + self._fail(failure)

    def _events(self, events: list[SSEEvent]) -> bytes:
        out: list[bytes] = []
        for event in events:
            try:
                self._event(event, out)
            except UpstreamFormatError as e:
                out.append(self._fail(StreamFailure(str(e), error=ErrorKind.PROTOCOL)))
            if self._over:
                break
        return b"".join(out)

    def _ended(self) -> bool:
        return self._over

    def _event(self, event: SSEEvent, out: list[bytes]) -> None:
        raise NotImplementedError

    def _error_event(self, failure: StreamFailure) -> bytes:
        raise NotImplementedError

    def _fail(self, failure: StreamFailure) -> bytes:
        self._failure = failure
        self._over = True
        return self._error_event(failure)

    def _end(self) -> None:
        self._over = True
        self._done = True


def _index(data: Mapping[str, Any]) -> int:
    index = data.get("index")
    if type(index) is not int:
        raise UpstreamFormatError(f"a {data.get('type')} event has no index")
    return index


def _object(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name)
    if not isinstance(value, Mapping):
        raise UpstreamFormatError(f"a {data.get('type')} event has no {name}")
    return value


def _tool_input_is_an_object(arguments: str, name: str) -> None:
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise UpstreamFormatError(f"the input of tool call {name!r} is not a JSON object")


# --- Anthropic -> OpenAI -------------------------------------------------------------------


@dataclass
class _Block:
    """One of the Anthropic message's content blocks, as the translation follows it."""

    kind: str  # "text", "tool" or "skip" (thinking, and blocks OpenAI has no place for)
    tool_index: int = -1  # its index among the tool calls (OpenAI's tool_calls[].index)
    name: str = ""
    arguments: list[str] = field(default_factory=list)
    open: bool = True


class AnthropicStreamTranslator(_Translator):
    """An Anthropic Messages SSE stream as OpenAI chat.completion.chunk events.

    ``model`` is the name the client asked for; ``include_usage`` (the client's
    ``stream_options.include_usage``) adds the usage chunk before ``[DONE]``; ``created`` is
    now unless given. Text deltas become ``content``, tool_use blocks ``tool_calls`` (their
    index counting tool calls only), thinking is left out (its tokens stay in the usage),
    ``ping`` and event types this translation does not know are skipped.
    """

    def __init__(self, *, model: str, include_usage: bool = False, created: int | None = None):
        super().__init__()
        self._model = model
        self._include_usage = include_usage
        self._created = int(time.time()) if created is None else created
        self._id: str | None = None
        self._usage: dict[str, Any] = {}
        self._blocks: dict[int, _Block] = {}
        self._tools = 0
        self._finish_reason: str | None = None
        self._handlers: dict[str, Callable[[Mapping[str, Any], list[bytes]], None]] = {
            "message_start": self._message_start,
            "content_block_start": self._block_start,
            "content_block_delta": self._block_delta,
            "content_block_stop": self._block_stop,
            "message_delta": self._message_delta,
            "message_stop": self._message_stop,
            "error": self._upstream_error,
        }

    @property
    def usage(self) -> dict[str, int | None] | None:
        """``{"input", "output"}`` tokens so far (input as OpenAI counts it: cached tokens
        included), None before the upstream said any."""
        if self._id is None:
            return None
        usage = openai_usage(self._usage)
        return {"input": usage["prompt_tokens"], "output": usage["completion_tokens"]}

    @property
    def finish_reason(self) -> str | None:
        """OpenAI's finish_reason, once the upstream gave its stop reason."""
        return self._finish_reason

    def _event(self, event: SSEEvent, out: list[bytes]) -> None:
        if event.event == "ping":
            return
        data = loads_object(event.data, "an event's data")
        kind = data.get("type")
        handler = self._handlers.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return  # an event type added after this translation: Anthropic says to skip it
        if self._id is None and kind not in ("message_start", "error"):
            raise UpstreamFormatError(f"a {kind} event before message_start")
        handler(data, out)

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return self._data({"choices": [choice]})

    def _data(self, fields: dict[str, Any]) -> bytes:
        chunk = {
            "id": self._id,
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": self._model,
            **fields,
        }
        return b"data: " + dumps(chunk) + b"\n\n"

    def _message_start(self, data: Mapping[str, Any], out: list[bytes]) -> None:
        if self._id is not None:
            raise UpstreamFormatError("a second message_start")
        message = _object(data, "message")
        message_id = message.get("id")
        usage = message.get("usage")
        if not isinstance(message_id, str) or not isinstance(usage, Mapping):
            raise UpstreamFormatError("message_start has no message id or no usage")
        openai_usage(usage)  # the counts are counts
        self._id = message_id
        self._usage = dict(usage)
        out.append(self._chunk({"role": "assistant", "content": ""}))

    def _block_start(self, data: Mapping[str, Any], out: list[bytes]) -> None:
        index = _index(data)
        if index in self._blocks:
            raise UpstreamFormatError(f"content block {index} started twice")
        block = _object(data, "content_block")
        kind = block.get("type")
        if kind == "text":
            self._blocks[index] = _Block("text")
            text = block.get("text")
            if isinstance(text, str) and text:
                out.append(self._chunk({"content": text}))
        elif kind == "tool_use":
            tool_id, name = block.get("id"), block.get("name")
            if not isinstance(tool_id, str) or not isinstance(name, str):
                raise UpstreamFormatError("a tool_use block has no id or no name")
            self._blocks[index] = _Block("tool", tool_index=self._tools, name=name)
            call = {"index": self._tools, "id": tool_id, "type": "function",
                    "function": {"name": name, "arguments": ""}}  # fmt: skip
            self._tools += 1
            out.append(self._chunk({"tool_calls": [call]}))
        else:
            self._blocks[index] = _Block("skip")

    def _open_block(self, data: Mapping[str, Any]) -> _Block:
        index = _index(data)
        block = self._blocks.get(index)
        if block is None or not block.open:
            raise UpstreamFormatError(f"a {data.get('type')} event for content block {index}, "
                                      "which is not open")  # fmt: skip
        return block

    def _block_delta(self, data: Mapping[str, Any], out: list[bytes]) -> None:
        block = self._open_block(data)
        delta = _object(data, "delta")
        kind = delta.get("type")
        if kind == "text_delta" and block.kind == "text":
            text = delta.get("text")
            if not isinstance(text, str):
                raise UpstreamFormatError("a text_delta has no text")
            if text:
                out.append(self._chunk({"content": text}))
        elif kind == "input_json_delta" and block.kind == "tool":
            partial = delta.get("partial_json")
            if not isinstance(partial, str):
                raise UpstreamFormatError("an input_json_delta has no partial_json")
            if partial:
                block.arguments.append(partial)
                call = {"index": block.tool_index, "function": {"arguments": partial}}
                out.append(self._chunk({"tool_calls": [call]}))
        elif (kind, block.kind) in (("text_delta", "tool"), ("input_json_delta", "text")):
            raise UpstreamFormatError(f"a {kind} in a {block.kind} block")
        # thinking, signature and citations deltas, the deltas of skipped blocks (a server
        # tool's input), and new kinds: nothing OpenAI shows

    def _block_stop(self, data: Mapping[str, Any], out: list[bytes]) -> None:
        self._close(self._open_block(data), out)

    def _close(self, block: _Block, out: list[bytes]) -> None:
        block.open = False
        if block.kind != "tool":
            return
        if not block.arguments:  # a tool without parameters: say so, as OpenAI does
            call = {"index": block.tool_index, "function": {"arguments": "{}"}}
            out.append(self._chunk({"tool_calls": [call]}))
            return
        _tool_input_is_an_object("".join(block.arguments), block.name)

    def _message_delta(self, data: Mapping[str, Any], out: list[bytes]) -> None:
        usage = data.get("usage")
        if isinstance(usage, Mapping):  # cumulative counts: each one given replaces the last
            merged = {**self._usage, **{k: v for k, v in usage.items() if v is not None}}
            openai_usage(merged)  # the counts are counts
            self._usage = merged
        delta = data.get("delta")
        stop_reason = delta.get("stop_reason") if isinstance(delta, Mapping) else None
        if stop_reason is not None and self._finish_reason is None:
            self._finish_reason = openai_finish_reason(stop_reason)
            out.append(self._chunk({}, self._finish_reason))

    def _message_stop(self, data: Mapping[str, Any], out: list[bytes]) -> None:
        for block in self._blocks.values():
            if block.open:
                self._close(block, out)
        if self._finish_reason is None:  # no stop reason was given: the message did stop
            self._finish_reason = "stop"
            out.append(self._chunk({}, self._finish_reason))
        if self._include_usage:
            out.append(self._data({"choices": [], "usage": openai_usage(self._usage)}))
        out.append(_DONE)
        self._end()

    def _upstream_error(self, data: Mapping[str, Any], out: list[bytes]) -> None:
        body = from_anthropic_error(data, status=500)["error"]
        error_type = body["type"]
        failure = StreamFailure(
            body["message"], status=status_for_error_type(error_type), error_type=error_type
        )
        out.append(self._fail(failure))

    def _error_event(self, failure: StreamFailure) -> bytes:
        if failure.error_type is not None:
            kind = failure.error_type
        elif failure.error is ErrorKind.STREAM_CUT:
            kind = "stream_cut"
        else:
            kind = "upstream_format_error"
        error = {"message": failure.message, "type": kind, "param": None, "code": kind}
        return b"data: " + dumps({"error": error}) + b"\n\n"


# --- OpenAI -> Anthropic -------------------------------------------------------------------


def _sse(event: dict[str, Any]) -> bytes:
    name: str = event["type"]
    return b"event: " + name.encode() + b"\ndata: " + dumps(event) + b"\n\n"


def _openai_error_status(error: Mapping[str, Any]) -> int:
    words = f"{error.get('type')} {error.get('code')}"
    if "rate_limit" in words:
        return 429
    if "invalid_request" in words:
        return 400
    return 500


class OpenAIStreamTranslator(_Translator):
    """An OpenAI chat.completion.chunk stream as Anthropic Messages SSE events.

    ``model`` is the name the client asked for. ``message_start`` carries zero usage: an
    OpenAI stream says its usage at the end (the translated request asks for it), so the real
    counts are in ``message_delta`` (cumulative: the Anthropic SDK takes them from there).
    Content becomes one text block, each tool call a tool_use block; a choice other than the
    first (n is never asked for) is skipped.
    """

    def __init__(self, *, model: str) -> None:
        super().__init__()
        self._model = model
        self._started = False
        self._block: _Block | None = None
        self._blocks = 0  # content blocks started
        self._tool_indexes: set[int] = set()
        self._openai_usage: Mapping[str, Any] | None = None
        self._stop_reason: str | None = None
        self._refused = False

    @property
    def usage(self) -> dict[str, int | None] | None:
        """``{"input", "output"}`` tokens (input as OpenAI counts it), None until the usage
        chunk."""
        usage = self._openai_usage
        if usage is None:
            return None
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
        return {
            "input": prompt if type(prompt) is int else None,
            "output": completion if type(completion) is int else None,
        }

    @property
    def stop_reason(self) -> str | None:
        """Anthropic's stop_reason, once the upstream gave its finish reason."""
        return self._stop_reason

    def _event(self, event: SSEEvent, out: list[bytes]) -> None:
        if event.data.strip() == "[DONE]":
            self._complete(out)
            return
        chunk = loads_object(event.data, "a chunk")
        error = chunk.get("error")
        if isinstance(error, Mapping):
            message = error.get("message")
            failure = StreamFailure(
                message if isinstance(message, str) else "the upstream failed mid-stream",
                status=_openai_error_status(error),
                error_type=str(error.get("type")),
            )
            out.append(self._fail(failure))
            return
        if not self._started:
            self._start(chunk, out)
        usage = chunk.get("usage")
        if isinstance(usage, Mapping):
            anthropic_usage(usage)  # the counts are counts
            self._openai_usage = usage
        choices = chunk.get("choices")
        if choices is None:
            choices = []
        if not isinstance(choices, list):
            raise UpstreamFormatError("a chunk's choices is not a list")
        for choice in choices:
            if isinstance(choice, Mapping) and choice.get("index", 0) == 0:
                self._choice(choice, out)

    def _start(self, chunk: Mapping[str, Any], out: list[bytes]) -> None:
        self._started = True
        chunk_id = chunk.get("id")
        message: dict[str, Any] = {
            "id": chunk_id if isinstance(chunk_id, str) and chunk_id else "msg_sluice",
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": 0, "output_tokens": 0},
        }
        out.append(_sse({"type": "message_start", "message": message}))

    def _choice(self, choice: Mapping[str, Any], out: list[bytes]) -> None:
        if self._stop_reason is not None:
            return  # after its finish reason a choice says nothing more
        delta = choice.get("delta") or {}
        if not isinstance(delta, Mapping):
            raise UpstreamFormatError("a choice's delta is not an object")
        for name in ("content", "refusal"):
            text = delta.get(name)
            if isinstance(text, str) and text:
                self._text(text, out)
                if name == "refusal":
                    self._refused = True
        calls = delta.get("tool_calls") or []
        if not isinstance(calls, list):
            raise UpstreamFormatError("a delta's tool_calls is not a list")
        for call in calls:
            self._tool_call(call, out)
        finish_reason = choice.get("finish_reason")
        if finish_reason is not None:
            self._close(out)
            self._stop_reason = "refusal" if self._refused else anthropic_stop_reason(finish_reason)

    def _open(self, block: _Block, content_block: dict[str, Any], out: list[bytes]) -> None:
        self._close(out)
        self._block = block
        event = {"type": "content_block_start", "index": self._blocks,
                 "content_block": content_block}  # fmt: skip
        out.append(_sse(event))

    def _delta(self, delta: dict[str, Any], out: list[bytes]) -> None:
        event = {"type": "content_block_delta", "index": self._blocks, "delta": delta}
        out.append(_sse(event))

    def _close(self, out: list[bytes]) -> None:
        block, self._block = self._block, None
        if block is None:
            return
        if block.kind == "tool" and block.arguments:
            _tool_input_is_an_object("".join(block.arguments), block.name)
        out.append(_sse({"type": "content_block_stop", "index": self._blocks}))
        self._blocks += 1

    def _text(self, text: str, out: list[bytes]) -> None:
        if self._block is None or self._block.kind != "text":
            self._open(_Block("text"), {"type": "text", "text": ""}, out)
        self._delta({"type": "text_delta", "text": text}, out)

    def _tool_call(self, call: Any, out: list[bytes]) -> None:
        if not isinstance(call, Mapping):
            raise UpstreamFormatError("a tool call delta is not an object")
        current = self._block if self._block is not None and self._block.kind == "tool" else None
        index = call.get("index")
        if type(index) is not int:  # some servers leave it out: the current call, or a new one
            index = current.tool_index if current is not None else len(self._tool_indexes)
        function = call.get("function") or {}
        if not isinstance(function, Mapping):
            raise UpstreamFormatError("a tool call delta's function is not an object")
        if current is None or current.tool_index != index:
            if index in self._tool_indexes:
                raise UpstreamFormatError(f"tool call {index} went on after the next began")
            name = function.get("name")
            if not isinstance(name, str) or not name:
                raise UpstreamFormatError(f"tool call {index} begins without a name")
            tool_id = call.get("id")
            if not isinstance(tool_id, str) or not tool_id:
                tool_id = f"toolu_sluice_{index}"
            self._tool_indexes.add(index)
            current = _Block("tool", tool_index=index, name=name)
            content_block = {"type": "tool_use", "id": tool_id, "name": name, "input": {}}
            self._open(current, content_block, out)
        arguments = function.get("arguments")
        if isinstance(arguments, str) and arguments:
            current.arguments.append(arguments)
            self._delta({"type": "input_json_delta", "partial_json": arguments}, out)

    def _complete(self, out: list[bytes]) -> None:
        if self._stop_reason is None:
            raise UpstreamFormatError("the stream said [DONE] without a finish_reason")
        self._close(out)
        usage = self._openai_usage
        delta_usage = anthropic_usage(usage) if usage is not None else {"output_tokens": 0}
        delta = {"stop_reason": self._stop_reason, "stop_sequence": None}
        out.append(_sse({"type": "message_delta", "delta": delta, "usage": delta_usage}))
        out.append(_sse({"type": "message_stop"}))
        self._end()

    def _error_event(self, failure: StreamFailure) -> bytes:
        status = failure.status if failure.status is not None else 500
        body = to_anthropic_error({"error": {"message": failure.message}}, status=status)
        return _sse(body)
