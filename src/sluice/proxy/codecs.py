"""How one attempt speaks to its upstream in the format the upstream speaks, for the API the
client called: the request's path and body, the answer and the stream on the way back. The
translations themselves are the providers' (``sluice.providers``); this module chooses them.

- An OpenAI client and an OpenAI-format upstream (OpenAI, Azure, vLLM, ...): bytes pass through
  (:data:`PASSTHROUGH`, the fast path); only the stream's usage is read on the way.
- An OpenAI chat client and an Anthropic upstream: :class:`ChatToAnthropic` translates the
  request to the Messages API, and the answer, its errors and its stream back to OpenAI's.
- OpenAI's Responses API (``/v1/responses``) to an OpenAI-format upstream: bytes pass through
  (:data:`RESPONSES`); the stream's end and usage are read from its ``response.completed``.
- An Anthropic client (``/v1/messages``): bytes pass through to an Anthropic upstream
  (:class:`MessagesNative`), and are translated for an OpenAI-format one
  (:class:`MessagesToOpenAI`), so an Anthropic-SDK client fails over to any model.
- Anything else (embeddings, legacy completions or Responses from an Anthropic upstream) cannot
  be served:
  :func:`codec_for` gives None and the picker leaves that upstream out, saying why.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from sluice.providers.anthropic import (
    DEFAULT_MAX_TOKENS,
    AnthropicStreamTranslator,
    OpenAIStreamTranslator,
    from_anthropic_error,
    from_anthropic_response,
    to_anthropic_error,
    to_anthropic_request,
    to_anthropic_response,
    to_openai_request,
)
from sluice.providers.anthropic_native import AnthropicPassthrough, anthropic_error_event
from sluice.providers.base import StreamFailure
from sluice.providers.openai import OpenAIStream, ResponsesStream, responses_error_event
from sluice.proxy.table import Target

__all__ = ["PASSTHROUGH", "ChatToAnthropic", "Codec", "StreamReader", "codec_for"]

JSON = {"content-type": "application/json"}


class StreamReader(Protocol):
    """A stream on its way to the client: bytes in, the client's bytes out."""

    @property
    def error(self) -> StreamFailure | None: ...

    @property
    def usage(self) -> dict[str, int | None] | None: ...

    @property
    def done(self) -> bool: ...

    def feed(self, data: bytes) -> bytes: ...

    def finish(self) -> bytes: ...


class Codec:
    """OpenAI's format both ways: the client's bytes go as they came (see Call.data_for)."""

    translates = False  # a translating codec writes its own error events into the stream
    passes_bytes = True  # the client's body goes as it came (but for the model's name)
    judges_end = False  # its stream's end is known (else only if it looks like SSE)

    def path(self, target: Target, operation: str, model: str) -> str:
        return target.provider.path(operation, model=model, api_version=target.spec.api_version)

    def body(self, body: dict[str, Any], target: Target, requested: str, model: str) -> bytes:
        """The request body for the upstream (``body`` with ``model``); raises
        TranslationError for what the upstream's format cannot say."""
        return orjson.dumps({**body, "model": model})

    def answer(self, status: int, body: bytes, headers: Mapping[str, str], model: str) -> bytes:
        """The client's body for the upstream's complete answer (UpstreamFormatError if a
        success is not what it should be)."""
        return body

    def stream(self, *, model: str, include_usage: bool) -> StreamReader:
        return OpenAIStream(keep_usage=include_usage)

    def headers(
        self, headers: list[tuple[str, str]], client: Mapping[str, str]
    ) -> list[tuple[str, str]]:
        """The request's headers, as this codec wants them (the client's own in ``client``)."""
        return headers

    def error_event(self, message: str) -> bytes:
        """The event that ends the client's stream when it breaks after its first byte."""
        error = {"error": {"message": message, "type": "upstream_error", "code": "upstream_error"}}
        return b"data: " + orjson.dumps(error) + b"\n\n"


PASSTHROUGH = Codec()


class Responses(Codec):
    """OpenAI's Responses API to an OpenAI-format upstream: bytes pass through; the stream's
    end is ``response.completed`` and its usage comes in that event."""

    judges_end = True

    def stream(self, *, model: str, include_usage: bool) -> StreamReader:
        return ResponsesStream()

    def error_event(self, message: str) -> bytes:
        return responses_error_event(message)


RESPONSES = Responses()


class ChatToAnthropic(Codec):
    """An OpenAI chat client served by Anthropic's Messages API."""

    translates = True
    passes_bytes = False
    judges_end = True

    def path(self, target: Target, operation: str, model: str) -> str:
        return "/messages"

    def body(self, body: dict[str, Any], target: Target, requested: str, model: str) -> bytes:
        default = target.max_tokens(requested) or DEFAULT_MAX_TOKENS
        return orjson.dumps(to_anthropic_request(body, model=model, max_tokens_default=default))

    def answer(self, status: int, body: bytes, headers: Mapping[str, str], model: str) -> bytes:
        if 200 <= status < 300:
            return orjson.dumps(from_anthropic_response(body, model=model))
        return orjson.dumps(from_anthropic_error(body, status=status))

    def stream(self, *, model: str, include_usage: bool) -> StreamReader:
        return AnthropicStreamTranslator(model=model, include_usage=include_usage)


CHAT_TO_ANTHROPIC = ChatToAnthropic()


class MessagesNative(Codec):
    """An Anthropic client (``/v1/messages``) and an Anthropic upstream: bytes pass through; the
    client's ``anthropic-version`` names its body's format, so it goes too."""

    judges_end = True

    def path(self, target: Target, operation: str, model: str) -> str:
        return "/messages"

    def stream(self, *, model: str, include_usage: bool) -> StreamReader:
        return AnthropicPassthrough()

    def error_event(self, message: str) -> bytes:
        return anthropic_error_event(message)

    def headers(
        self, headers: list[tuple[str, str]], client: Mapping[str, str]
    ) -> list[tuple[str, str]]:
        version = client.get("anthropic-version")
        if not version:
            return headers
        return [(k, version if k == "anthropic-version" else v) for k, v in headers]


MESSAGES_NATIVE = MessagesNative()


class MessagesToOpenAI(Codec):
    """An Anthropic client (``/v1/messages``) served by an OpenAI-format upstream."""

    translates = True
    passes_bytes = False
    judges_end = True

    def path(self, target: Target, operation: str, model: str) -> str:
        return super().path(target, "/chat/completions", model)

    def body(self, body: dict[str, Any], target: Target, requested: str, model: str) -> bytes:
        return orjson.dumps(to_openai_request(body, model=model))

    def answer(self, status: int, body: bytes, headers: Mapping[str, str], model: str) -> bytes:
        if 200 <= status < 300:
            return orjson.dumps(to_anthropic_response(body, model=model))
        return orjson.dumps(to_anthropic_error(body, status=status))

    def stream(self, *, model: str, include_usage: bool) -> StreamReader:
        return OpenAIStreamTranslator(model=model)

    def error_event(self, message: str) -> bytes:
        return anthropic_error_event(message)


MESSAGES_TO_OPENAI = MessagesToOpenAI()
RESPONSES_PATH = "/v1/responses"
MESSAGES_PATH = "/v1/messages"


def codec_for(path: str, target: Target) -> Codec | None:
    """How a request to the client endpoint ``path`` is sent to ``target``; None if it cannot
    be (the upstream does not speak that API)."""
    anthropic = target.spec.provider == "anthropic"
    if path == MESSAGES_PATH:
        return MESSAGES_NATIVE if anthropic else MESSAGES_TO_OPENAI
    if path == RESPONSES_PATH:  # Azure serves it only on its v1 API
        classic_azure = target.provider.path("/responses", model="m", api_version=None) != (
            "/responses"
        )
        return None if anthropic or classic_azure else RESPONSES
    if not anthropic:
        return PASSTHROUGH
    return CHAT_TO_ANTHROPIC if path == "/v1/chat/completions" else None
