"""A fake Azure OpenAI resource, steered as the OpenAI fake is (``x-fake-*``, see
``sluice.fakes.upstream``), answering as the OpenAI fake answers, with Azure's paths, key
and error bodies (``{"error": {"code": ..., "message": ...}}``).

Paths (``models`` are the deployments it serves):

* classic: ``POST /openai/deployments/{deployment}/chat/completions`` (also ``completions`` and
  ``embeddings``) and ``GET /openai/models``, each with ``?api-version=``; this is what
  ``openai.AzureOpenAI(azure_endpoint=fake.root_url, api_version=...)`` calls.
* v1: ``/openai/v1/chat/completions``, ``completions``, ``embeddings``, ``responses`` and
  ``models``, the deployment named by ``model``, no api-version; what plain
  ``openai.OpenAI(base_url=fake.v1_base_url)`` calls.

``base_url`` (``.../openai``) is an Upstream's baseURL: a probe's ``GET {baseURL}/models``
with the provider's ``api-version`` lands on the classic model list.

Refused: no key (401; the key is the ``api-key`` header, or ``Authorization: Bearer`` as an
Entra token or, on v1, the key the OpenAI client sends; with ``api_key`` set, any other key);
on classic paths no ``api-version`` (404 ``Resource not found``, as Azure answers) or one it
does not serve (400 ``BadRequest``, naming those it does: ``api_versions``, 2024-10-21 and
later); on v1 an ``api-version`` other than ``preview`` or ``latest`` (400); a deployment it
does not serve (404 ``DeploymentNotFound``); a v1 request without ``model`` (400); any other
path under ``/openai`` (404).

A 429 (steered) carries ``retry-after`` (seconds), ``retry-after-ms`` and
``x-ms-retry-after-ms``: 1 s unless ``x-fake-retry-after`` says. Every answer carries an
``apim-request-id``.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from sluice.fakes import responses
from sluice.fakes.upstream import FakeUpstream

__all__ = ["API_VERSIONS", "FakeAzureOpenAI"]

# The GA api-version Sluice's provider probes with, and the previews after it.
API_VERSIONS = (
    "2024-10-21",
    "2024-12-01-preview",
    "2025-01-01-preview",
    "2025-02-01-preview",
    "2025-03-01-preview",
    "2025-04-01-preview",
)
V1_API_VERSIONS = ("preview", "latest")
KINDS = ("chat/completions", "completions", "embeddings")


def _refuse(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> web.Response:
    return web.json_response(
        {"error": {"code": code, "message": message}}, status=status, headers=headers
    )


def _not_found() -> web.Response:
    return _refuse(404, "404", "Resource not found")


@dataclass
class FakeAzureOpenAI(FakeUpstream):
    """``FakeAzureOpenAI(name=..., models=(deployment, ...))``."""

    models: tuple[str, ...] = ("gpt-fake",)
    api_key: str | None = None  # when set, the only key accepted
    api_versions: tuple[str, ...] = API_VERSIONS

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/openai"

    @property
    def v1_base_url(self) -> str:
        return f"{self.root_url}/openai/v1"

    def app(self) -> web.Application:
        app = web.Application()
        for kind in KINDS:
            app.router.add_post(f"/openai/deployments/{{deployment}}/{kind}", self._classic)
            app.router.add_post(f"/openai/v1/{kind}", self._v1)
        app.router.add_post("/openai/v1/responses", self._v1)
        app.router.add_get("/openai/models", self._classic_models)
        app.router.add_get("/openai/v1/models", self._v1_models)
        app.router.add_route("*", "/openai/{rest:.*}", self._unknown)
        app.on_response_prepare.append(_add_request_id)
        return app

    def _error(self, request: web.Request, code: int) -> web.Response:
        headers = {}
        retry_after = self._steer(request, "x-fake-retry-after")
        if code == 429:
            seconds = float(retry_after or 1)
            millis = str(round(seconds * 1000))
            headers = {
                "retry-after": retry_after or "1",
                "retry-after-ms": millis,
                "x-ms-retry-after-ms": millis,
            }
            version = request.query.get("api-version", "v1")
            message = (
                f"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version "
                f"{version} have exceeded call rate limit of your current OpenAI S0 pricing tier. "
                f"Please retry after {retry_after or 1} second."
            )
            return _refuse(429, "429", message, headers)
        if retry_after:
            headers["retry-after"] = retry_after
        return _refuse(code, str(code), f"fake {self.name} says {code}", headers)

    async def _gate(self, request: web.Request, *, v1: bool) -> web.Response | None:
        """Steering, the key, then the api-version."""
        if (trouble := await self._trouble(request)) is not None:
            return trouble
        key = request.headers.get("api-key")
        if key is None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            key = token if scheme.lower() == "bearer" else None
        if not key:
            return _refuse(
                401,
                "401",
                "Access denied due to missing subscription key. Make sure to include "
                "subscription key when making requests to an API.",
            )
        if self.api_key is not None and key != self.api_key:
            return _refuse(
                401,
                "401",
                "Access denied due to invalid subscription key or wrong API endpoint. Make sure "
                "to provide a valid key for an active subscription and use a correct regional "
                "API endpoint for your resource.",
            )
        version = request.query.get("api-version")
        if v1:
            if version is not None and version not in V1_API_VERSIONS:
                return _refuse(
                    400,
                    "BadRequest",
                    f"API version not supported: the v1 API takes no api-version, or one of "
                    f"{', '.join(V1_API_VERSIONS)}",
                )
            return None
        if version is None:
            return _not_found()
        if version not in self.api_versions:
            return _refuse(
                400,
                "BadRequest",
                f"API version not supported: {version!r}; this resource serves "
                f"{', '.join(self.api_versions)}",
            )
        return None

    def _no_deployment(self) -> web.Response:
        return _refuse(
            404,
            "DeploymentNotFound",
            "The API deployment for this resource does not exist. If you created the "
            "deployment within the last 5 minutes, please wait a moment and try again.",
        )

    async def _classic(self, request: web.Request) -> web.StreamResponse:
        if (refusal := await self._gate(request, v1=False)) is not None:
            return refusal
        if request.match_info["deployment"] not in self.models:
            return self._no_deployment()
        return await self._answer(request)

    async def _v1(self, request: web.Request) -> web.StreamResponse:
        if (refusal := await self._gate(request, v1=True)) is not None:
            return refusal
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return _refuse(400, "BadRequest", "The request body is not valid JSON")
        model = body.get("model") if isinstance(body, dict) else None
        if not model:
            return _refuse(400, "BadRequest", "Missing required parameter: 'model'.")
        if model not in self.models:
            return self._no_deployment()
        return await self._answer(request)

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        if path.endswith("/responses"):
            return await responses.answer(request, self.name, self._stream_steering(request))
        if path.endswith("/embeddings"):
            return await self._answer_embeddings(request)
        return await self._answer_chat(request, legacy=not path.endswith("/chat/completions"))

    def _model_list(self) -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {"id": m, "object": "model", "created": 0, "owned_by": self.name}
                for m in self.models
            ],
        }

    async def _classic_models(self, request: web.Request) -> web.Response:
        if (refusal := await self._gate(request, v1=False)) is not None:
            return refusal
        return web.json_response(self._model_list())

    async def _v1_models(self, request: web.Request) -> web.Response:
        if (refusal := await self._gate(request, v1=True)) is not None:
            return refusal
        return web.json_response(self._model_list())

    async def _unknown(self, request: web.Request) -> web.Response:
        if (trouble := await self._trouble(request)) is not None:
            return trouble
        return _not_found()


async def _add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("apim-request-id", str(uuid.uuid4()))
