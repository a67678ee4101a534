"""A fake OpenAI-compatible upstream on loopback, steered per request to misbehave.

Every request is recorded (method, path, every header, lower-cased), so tests can count what
reached it and check what it carried. A request can ask for trouble with headers; the server's
``default_status`` makes every request without them fail, as an upstream that is down for
everyone would. Each header also has a form scoped to one fake by name,
``x-fake-status-primary``, which wins over the plain one for the fake named ``primary`` (so one
request can fail one upstream and not another). The proxy passes these headers on only to an
Upstream that lists them in ``forwardHeaders`` (``x-fake-*``).

============================ ================================================================
``x-fake-status``            answer with this HTTP status and an OpenAI-style error body
``x-fake-delay``             seconds to wait before answering
``x-fake-retry-after``       with a 429, the ``Retry-After`` header to send
``x-fake-reset``             close the connection without answering (a reset)
``x-fake-chunks``            how many content chunks a stream sends (default 3)
``x-fake-chunk-delay``       seconds between stream chunks
``x-fake-stall-after``       stream this many chunks, then stall (send nothing more)
``x-fake-cut-after``         stream this many chunks, then drop the connection mid-stream
``x-fake-stream-error``      stream this many chunks, then the provider's mid-stream error
============================ ================================================================

Besides chat completions, completions, embeddings and the model list, it answers the Responses
API (``POST /v1/responses``, see ``sluice.fakes.responses``). A streamed chat request with
``stream_options: {"include_usage": true}`` gets, as OpenAI sends it, ``"usage": null`` on every
chunk and a last chunk with ``choices: []`` and the usage before ``[DONE]``; ``stream_options``
without ``stream`` is refused (400), as OpenAI refuses it. Other providers' fakes build on this
one: ``sluice.fakes.anthropic`` and ``sluice.fakes.azure``.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from sluice.fakes import responses
from sluice.fakes.errors import invalid_request
from sluice.fakes.sse import StreamSteering

__all__ = ["FakeUpstream", "SeenRequest"]


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    at: float
    query: dict[str, str] = field(default_factory=dict)


@dataclass
class FakeUpstream:
    """``await fake.start()``, then point an Upstream at ``fake.base_url``; ``await fake.stop()``
    makes connections fail (refused) until the next ``start()`` on the same port."""

    name: str = "fake"
    models: tuple[str, ...] = ("m1",)
    port: int = 0
    default_status: int | None = None  # every unsteered request gets this status
    flaky: float = 0.0  # this fraction of unsteered requests fail with 503 (for demos)
    fail_next: int = 0  # the next this-many unsteered requests fail with 503
    # The provider's own limit, as OpenAI keeps one: every answer says what is left in
    # x-ratelimit-*-requests, and a request past it gets 429 (as the real API answers).
    requests_per_minute: int | None = None
    # Where it listens: loopback, unless it runs as a pod behind a Service (the e2e tier).
    host: str = "127.0.0.1"
    seen: list[SeenRequest] = field(default_factory=list)
    _admitted: list[float] = field(default_factory=list, repr=False)
    _runner: web.AppRunner | None = field(default=None, repr=False)

    @property
    def root_url(self) -> str:
        """Scheme, host and port: what an SDK that adds ``/v1`` itself takes as its base."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_post("/v1/completions", self._chat)
        app.router.add_post("/v1/embeddings", self._embeddings)
        app.router.add_post("/v1/responses", self._responses)
        app.on_response_prepare.append(self._rate_limit_headers)
        return app

    async def start(self) -> None:
        # A stalled or delayed handler must not hold up stop() for aiohttp's default 60 s.
        runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=0.2)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            server = site._server  # aiohttp exposes no public getter for the bound port
            if not isinstance(server, asyncio.base_events.Server):
                raise TypeError(f"unexpected aiohttp server {server!r}")
            self.port = server.sockets[0].getsockname()[1]
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            # Stop listening first, then give connections accepted as the listener closed a
            # moment to register with the server: cleanup() closes only those it knows, and an
            # unregistered one would leak its socket once the loop stops.
            for site in list(self._runner.sites):
                await site.stop()
            await asyncio.sleep(0.01)
            await self._runner.cleanup()
            self._runner = None

    def requests_to(self, path: str) -> list[SeenRequest]:
        return [r for r in self.seen if r.path == path]

    def _steer(self, request: web.Request, name: str) -> str | None:
        headers = request.headers
        return headers.get(f"{name}-{self.name}") or headers.get(name)

    def _stream_steering(self, request: web.Request) -> StreamSteering:
        return StreamSteering.read(lambda name: self._steer(request, name))

    async def _trouble(self, request: web.Request) -> web.Response | None:
        """Record the request, then do what its steering headers ask: the error answer to send,
        or None to answer normally."""
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.seen.append(
            SeenRequest(
                method=request.method,
                path=request.path,
                headers=headers,
                at=time.time(),
                query=dict(request.query),
            )
        )
        if self._over_limit(request):
            return web.json_response(
                {"error": {"message": f"Rate limit reached for requests on fake {self.name}",
                           "type": "requests", "param": None, "code": "rate_limit_exceeded"}},
                status=429, headers={"Retry-After": "1"},
            )  # fmt: skip
        if delay := self._steer(request, "x-fake-delay"):
            await asyncio.sleep(float(delay))
        if self._steer(request, "x-fake-reset") and request.transport is not None:
            request.transport.abort()  # RST, no response at all
            raise web.HTTPBadRequest  # never sent: the connection is gone
        status = self._steer(request, "x-fake-status")
        code = int(status) if status else self.default_status
        if code is None and self.fail_next > 0:
            self.fail_next -= 1
            code = 503
        if code is None and self.flaky and random.random() < self.flaky:  # noqa: S311
            code = 503
        if code is None or code < 400:
            return None
        return self._error(request, code)

    def _over_limit(self, request: web.Request) -> bool:
        """Count an API request against ``requests_per_minute``; whether it is past it."""
        if self.requests_per_minute is None or request.path == "/v1/models":
            return False
        now = time.monotonic()
        self._admitted = [t for t in self._admitted if now - t < 60]
        if len(self._admitted) >= self.requests_per_minute:
            return True
        self._admitted.append(now)
        return False

    async def _rate_limit_headers(self, request: web.Request, response: web.StreamResponse) -> None:
        limit = self.requests_per_minute
        if limit is None or request.path == "/v1/models":
            return
        now = time.monotonic()
        window = [t for t in self._admitted if now - t < 60]
        reset = 0.0 if not window else 60 - (now - window[0])
        response.headers["x-ratelimit-limit-requests"] = str(limit)
        response.headers["x-ratelimit-remaining-requests"] = str(max(0, limit - len(window)))
        response.headers["x-ratelimit-reset-requests"] = f"{reset:.3f}s"

    def _error(self, request: web.Request, code: int) -> web.Response:
        """The answer to a request steered (or defaulted) to fail with ``code``."""
        response_headers = {}
        if retry_after := self._steer(request, "x-fake-retry-after"):
            response_headers["Retry-After"] = retry_after
        return web.json_response(
            {"error": {"message": f"fake {self.name} says {code}", "type": "fake_error"}},
            status=code,
            headers=response_headers,
        )

    async def _models(self, request: web.Request) -> web.Response:
        if (trouble := await self._trouble(request)) is not None:
            return trouble
        return web.json_response(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": 0, "owned_by": self.name}
                    for m in self.models
                ],
            }
        )

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        if (trouble := await self._trouble(request)) is not None:
            return trouble
        legacy = request.path.endswith("/completions") and "chat" not in request.path
        return await self._answer_chat(request, legacy=legacy)

    async def _answer_chat(self, request: web.Request, *, legacy: bool) -> web.StreamResponse:
        """A chat completion (or, ``legacy``, a text completion) for ``request``."""
        body = await request.json()
        model = str(body.get("model", self.models[0]))
        text = f"hello from {self.name}"
        if legacy:
            return web.json_response(
                {
                    "id": "cmpl-fake",
                    "object": "text_completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [{"index": 0, "text": text, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5},
                }
            )
        if not body.get("stream"):
            if body.get("stream_options") is not None:
                return invalid_request(
                    "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                    param="stream_options",
                )
            return web.json_response(
                {
                    "id": "chatcmpl-fake",
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 4, "total_tokens": 5},
                }
            )
        steering = self._stream_steering(request)
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for index in range(steering.chunks):
            verdict = await steering.before(request, index)
            if verdict == "cut":
                return response
            if verdict == "error":
                return await _stream_error(response)
            chunk: dict[str, Any] = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": f"{self.name}-{index} "},
                        "finish_reason": None,
                    }
                ],
            }
            if include_usage:
                chunk["usage"] = None
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
            if steering.pause:
                await asyncio.sleep(steering.pause)
        if steering.error_at_end(steering.chunks):
            return await _stream_error(response)
        finish: dict[str, Any] = {  # as OpenAI ends every choice: an empty delta and the reason
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
        }
        if include_usage:
            finish["usage"] = None
        await response.write(f"data: {json.dumps(finish)}\n\n".encode())
        if include_usage:
            usage = {
                "prompt_tokens": 1,
                "completion_tokens": steering.chunks,
                "total_tokens": 1 + steering.chunks,
            }
            last = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [],
                "usage": usage,
            }
            await response.write(f"data: {json.dumps(last)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _responses(self, request: web.Request) -> web.StreamResponse:
        if (trouble := await self._trouble(request)) is not None:
            return trouble
        return await responses.answer(request, self.name, self._stream_steering(request))

    async def _embeddings(self, request: web.Request) -> web.Response:
        if (trouble := await self._trouble(request)) is not None:
            return trouble
        return await self._answer_embeddings(request)

    async def _answer_embeddings(self, request: web.Request) -> web.Response:
        body = await request.json()
        inputs = body.get("input", "")
        count = len(inputs) if isinstance(inputs, list) else 1
        return web.json_response(
            {
                "object": "list",
                "model": body.get("model", self.models[0]),
                "data": [
                    {"object": "embedding", "index": i, "embedding": [0.1, 0.2, 0.3]}
                    for i in range(count)
                ],
                "usage": {"prompt_tokens": count, "total_tokens": count},
            }
        )


async def _stream_error(response: web.StreamResponse) -> web.StreamResponse:
    """What OpenAI sends when a chat stream fails part way: an error object as a data line, no
    ``[DONE]`` (the SDK raises ``APIError`` on it)."""
    error = {
        "error": {
            "message": "The server had an error while processing your request. Sorry about that!",
            "type": "server_error",
            "param": None,
            "code": None,
        }
    }
    await response.write(f"data: {json.dumps(error)}\n\n".encode())
    await response.write_eof()
    return response
