"""A deliberately naive aiohttp passthrough: the floor issue 7 sets for Sluice's proxy.

One server, one shared ClientSession, no routing, no breakers, no metrics: every request body is
sent to one upstream and its answer returned. Usage: naive_passthrough.py PORT UPSTREAM_URL [uvloop]
"""

from __future__ import annotations

import sys

import aiohttp
from aiohttp import web


def main() -> None:
    port, upstream = int(sys.argv[1]), sys.argv[2].rstrip("/")

    async def session_ctx(app: web.Application) -> object:
        app["session"] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await app["session"].close()

    async def forward(request: web.Request) -> web.Response:
        body = await request.read()
        async with request.app["session"].post(
            upstream + request.path, data=body, headers={"Content-Type": "application/json"}
        ) as response:
            payload = await response.read()
            return web.Response(
                status=response.status,
                body=payload,
                headers={"Content-Type": response.headers.get("Content-Type", "application/json")},
            )

    app = web.Application()
    app.cleanup_ctx.append(session_ctx)  # type: ignore[arg-type]
    app.router.add_post("/{tail:.*}", forward)
    loop = None
    if sys.argv[3:] == ["uvloop"]:
        import uvloop  # noqa: PLC0415 - only when asked for

        loop = uvloop.new_event_loop()
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None, loop=loop)


if __name__ == "__main__":
    main()
