"""What the provider tests share: a check of a request against the SDKs' params TypedDicts, the
SSE bytes read back with the SDKs' own decoders, and every chunk or event validated as the
SDK's pydantic type."""

from __future__ import annotations

import collections.abc
import types
import typing
from typing import Any, Literal, NotRequired, Required, Union, get_args, get_origin

import orjson
import typing_extensions
from anthropic._streaming import SSEDecoder as AnthropicSSEDecoder
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.message_create_params import (
    MessageCreateParamsNonStreaming,
    MessageCreateParamsStreaming,
)
from openai._streaming import SSEDecoder as OpenAISSEDecoder
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.chat.completion_create_params import (
    CompletionCreateParamsNonStreaming,
    CompletionCreateParamsStreaming,
)
from pydantic import BaseModel, TypeAdapter

_EVENTS: TypeAdapter[Any] = TypeAdapter(RawMessageStreamEvent)


class Mismatch(AssertionError):
    pass


def _hints(typed_dict: Any) -> dict[str, Any]:
    return typing.get_type_hints(typed_dict, include_extras=True)


def check_typed(value: Any, annotation: Any, path: str = "body") -> None:
    """``value`` (JSON data) fits ``annotation`` (the SDK's params types): TypedDicts with no
    key they do not declare and every key they require, unions, literals, lists, dicts."""
    origin = get_origin(annotation)
    if annotation is Any or annotation is object:
        return
    if origin in (Required, NotRequired, typing.Annotated):
        check_typed(value, get_args(annotation)[0], path)
    elif origin in (Union, types.UnionType):
        _check_union(value, annotation, path)
    elif origin is Literal:
        if value not in get_args(annotation):
            raise Mismatch(f"{path}: {value!r} is not one of {get_args(annotation)}")
    elif typing_extensions.is_typeddict(annotation):
        _check_typed_dict(value, annotation, path)
    elif origin in (dict, collections.abc.Mapping, list, collections.abc.Iterable,
                    collections.abc.Sequence):  # fmt: skip
        _check_collection(value, annotation, path)
    else:
        _check_scalar(value, annotation, path)


def _check_union(value: Any, annotation: Any, path: str) -> None:
    failures = []
    for option in get_args(annotation):
        try:
            check_typed(value, option, path)
        except Mismatch as e:
            failures.append(str(e))
        else:
            return
    raise Mismatch(f"{path}: fits none of the union: {failures}")


def _check_collection(value: Any, annotation: Any, path: str) -> None:
    if get_origin(annotation) in (dict, collections.abc.Mapping):
        if not isinstance(value, dict):
            raise Mismatch(f"{path}: not an object")
        for key, item in value.items():
            check_typed(item, get_args(annotation)[1], f"{path}.{key}")
        return
    if not isinstance(value, list):
        raise Mismatch(f"{path}: not a list")
    for i, item in enumerate(value):
        check_typed(item, get_args(annotation)[0], f"{path}[{i}]")


def _check_typed_dict(value: Any, annotation: Any, path: str) -> None:
    if not isinstance(value, dict):
        raise Mismatch(f"{path}: not an object (a {annotation.__name__})")
    hints = _hints(annotation)
    unknown = set(value) - set(hints)
    if unknown:
        raise Mismatch(f"{path}: {annotation.__name__} has no {sorted(unknown)}")
    # Required[...] in a string annotation escapes __required_keys__: read it from the hints
    required = {k for k, h in hints.items() if get_origin(h) is Required}
    required |= set(annotation.__required_keys__)
    missing = required - set(value)
    if missing:
        raise Mismatch(f"{path}: {annotation.__name__} needs {sorted(missing)}")
    for key, item in value.items():
        check_typed(item, hints[key], f"{path}.{key}")


def _check_scalar(value: Any, annotation: Any, path: str) -> None:
    if annotation is type(None):
        ok = value is None
    elif annotation is bool:
        ok = isinstance(value, bool)
    elif annotation is int:
        ok = type(value) is int
    elif annotation is float:
        ok = type(value) in (int, float)
    elif annotation is str:
        ok = isinstance(value, str)
    elif isinstance(annotation, type) and issubclass(annotation, BaseModel):
        ok = False  # a response type (a Message's blocks, sent back): the params types must fit
    else:
        ok = True  # file inputs and the like: never in a translated request
    if not ok:
        raise Mismatch(f"{path}: {value!r} is not a {annotation}")


# The sampling parameters Anthropic's SDK dropped (1.0) while its API still takes them from the
# models before Opus 4.7: the translator sends them, so the check allows them.
LEGACY_ANTHROPIC_FIELDS = {"temperature": float, "top_p": float, "top_k": int}


def check_anthropic_request(body: dict[str, Any]) -> None:
    params = MessageCreateParamsStreaming if body.get("stream") else MessageCreateParamsNonStreaming
    rest = dict(body)
    for name, kind in LEGACY_ANTHROPIC_FIELDS.items():
        if name in rest:
            _check_scalar(rest.pop(name), kind, f"body.{name}")
    check_typed(rest, params)


def check_openai_request(body: dict[str, Any]) -> None:
    params = (
        CompletionCreateParamsStreaming
        if body.get("stream")
        else CompletionCreateParamsNonStreaming
    )
    check_typed(body, params)


def check_message(body: dict[str, Any]) -> Message:
    return Message.model_validate(body, strict=False)


def check_completion(body: dict[str, Any]) -> ChatCompletion:
    return ChatCompletion.model_validate(body)


def openai_stream(data: bytes) -> tuple[list[ChatCompletionChunk], list[dict[str, Any]], bool]:
    """The chunks (validated), the error objects, and whether [DONE] came: read with the
    openai SDK's own SSE decoder."""
    chunks, errors, done = [], [], False
    for event in OpenAISSEDecoder().iter_bytes(iter([data])):
        assert event.event is None
        assert not done, "nothing after [DONE]"
        if event.data == "[DONE]":
            done = True
            continue
        payload = orjson.loads(event.data)
        if "error" in payload:
            assert set(payload["error"]) >= {"message", "type", "code"}
            errors.append(payload["error"])
        else:
            assert not errors, "nothing after an error"
            chunks.append(ChatCompletionChunk.model_validate(payload))
    return chunks, errors, done


def openai_final(chunks: list[ChatCompletionChunk]) -> ChatCompletion:
    state: ChatCompletionStreamState[Any] = ChatCompletionStreamState()
    for chunk in chunks:
        state.handle_chunk(chunk)
    return state.get_final_completion()


def anthropic_stream(data: bytes) -> tuple[list[Any], list[dict[str, Any]]]:
    """The events (validated as RawMessageStreamEvent) and the error bodies: read with the
    anthropic SDK's own SSE decoder; each event's name is its data's type."""
    events, errors = [], []
    for sse in AnthropicSSEDecoder().iter_bytes(iter([data])):
        payload = orjson.loads(sse.data)
        assert sse.event == payload["type"]
        if sse.event == "ping":  # not a RawMessageStreamEvent: the SDK skips it
            continue
        if sse.event == "error":
            assert set(payload["error"]) == {"type", "message"}
            errors.append(payload)
        else:
            assert not errors, "nothing after an error"
            events.append(_EVENTS.validate_python(payload))
    return events, errors


def anthropic_final(events: list[Any]) -> Message:
    snapshot = None
    json_bufs: dict[int, bytes] = {}
    for event in events:
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    return Message.model_validate(snapshot.model_dump())


def sse(events: list[dict[str, Any]]) -> bytes:
    """Anthropic's framing: an event line with the type, a data line, a blank line."""
    return b"".join(
        b"event: " + e["type"].encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n" for e in events
    )


def chunks_sse(chunks: list[dict[str, Any]], *, done: bool = True) -> bytes:
    """OpenAI's framing: data lines, then [DONE]."""
    body = b"".join(b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks)
    return body + (b"data: [DONE]\n\n" if done else b"")
