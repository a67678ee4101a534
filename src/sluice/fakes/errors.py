"""OpenAI's error body, shared by the OpenAI fake's endpoints."""

from __future__ import annotations

from aiohttp import web

__all__ = ["invalid_request"]


def invalid_request(
    message: str, *, param: str | None = None, code: str | None = None, status: int = 400
) -> web.Response:
    """``{"error": {"message", "type": "invalid_request_error", "param", "code"}}``."""
    return web.json_response(
        {
            "error": {
                "message": message,
                "type": "invalid_request_error",
                "param": param,
                "code": code,
            }
        },
        status=status,
    )
