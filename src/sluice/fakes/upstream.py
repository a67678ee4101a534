"""A fake OpenAI-compatible upstream on loopback, steered per request to misbehave.

Every request is recorded (method, path, the headers that matter), so tests can count what
reached it. A request can ask for trouble with headers; the server's ``default_status`` makes
every request without them fail, as an upstream that is down for everyone would:

=================== =========================================================================
``x-fake-status``    answer with this HTTP status and an OpenAI-style error body
``x-fake-delay``     seconds to wait before answering
``x-fake-retry-after`` with a 429, the ``Retry-After`` header to send
=================== =========================================================================
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field

from aiohttp import web

__all__ = ["FakeUpstream", "SeenRequest"]

_RECORDED_HEADERS = ("authorization", "x-api-key", "api-key", "user-agent", "x-sluice-probe")


@dataclass(frozen=True)
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]
    at: float


@dataclass
class FakeUpstream:
    """``await fake.start()``, then point an Upstream at ``fake.base_url``; ``await fake.stop()``
    makes connections fail (refused) until the next ``start()`` on the same port."""

    name: str = "fake"
    models: tuple[str, ...] = ("m1",)
    port: int = 0
    default_status: int | None = None  # every unsteered request gets this status
    seen: list[SeenRequest] = field(default_factory=list)
    _runner: web.AppRunner | None = field(default=None, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/v1/chat/completions", self._chat)
        return app

    async def start(self) -> None:
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        if self.port == 0:
            server = site._server  # aiohttp exposes no public getter for the bound port
            if not isinstance(server, asyncio.base_events.Server):
                raise TypeError(f"unexpected aiohttp server {server!r}")
            self.port = server.sockets[0].getsockname()[1]
        self._runner = runner

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def requests_to(self, path: str) -> list[SeenRequest]:
        return [r for r in self.seen if r.path == path]

    async def _trouble(self, request: web.Request) -> web.Response | None:
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.seen.append(
            SeenRequest(
                method=request.method,
                path=request.path,
                headers={k: v for k, v in headers.items() if k in _RECORDED_HEADERS},
                at=time.time(),
            )
        )
        if delay := headers.get("x-fake-delay"):
            await asyncio.sleep(float(delay))
        status = headers.get("x-fake-status")
        code = int(status) if status else self.default_status
        if code is None or code < 400:
            return None
        response_headers = {}
        if retry_after := headers.get("x-fake-retry-after"):
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
        body = await request.json()
        model = str(body.get("model", self.models[0]))
        text = f"hello from {self.name}"
        if not body.get("stream"):
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
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        for word in text.split():
            chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}],
            }
            await response.write(f"data: {json.dumps(chunk)}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response
