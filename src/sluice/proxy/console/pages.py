"""The console's endpoints under ``/ui``: the login, the three pages, the fragments they poll
(htmx swaps them in place every second), the breaker actions and the static files.

Every page and fragment is behind the same gate (:func:`_gate`): the console is off without an
admin token; the Host allowlist applies; a session cookie is needed (else the login page); a
POST must come from the console's own origin and carry the session's CSRF token. The actions
go through the admin API's own code (``ADMIN_ACTIONS``), so each mode carries them out as
``/admin`` does.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import jinja2
from aiohttp import web

from sluice.errors import SluiceError
from sluice.proxy.admin import AdminAction, AdminActionError
from sluice.proxy.console import auth, charts, views
from sluice.proxy.console.cluster import CLUSTER, EventLine, Events
from sluice.proxy.handlers import ADMIN_ACTIONS, PROXY
from sluice.proxy.intake import host_refusal
from sluice.resources import Ref

__all__ = ["console_routes"]

_PACKAGE = resources.files("sluice.proxy.console")
_TEMPLATES = jinja2.Environment(
    loader=jinja2.PackageLoader("sluice.proxy.console", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)
_TEMPLATES.globals.update(css_of=views.css_of, clock_text=views.clock_text, chart=charts)
_STATIC = {
    "htmx.min.js": "text/javascript",
    "console.css": "text/css",
    "favicon.svg": "image/svg+xml",
}
# No inline script or style anywhere: the console's own files, the page's own origin only.
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; "
    "object-src 'none'"
)
_SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # no-referrer makes form POSTs say Origin: null
    "Cache-Control": "no-store",
}
_ACTION_WORDS = {
    AdminAction.OPEN: "Force open",
    AdminAction.CLOSE: "Force closed",
    AdminAction.AUTO: "Auto",
    AdminAction.RESET: "Reset",
}

Page = Callable[[web.Request, auth.Session], Awaitable[web.StreamResponse]]


@dataclass
class _Console:
    """The console's own state on the app: the Events cache (cluster mode)."""

    events: Events | None = None
    static: dict[str, bytes] = field(default_factory=dict)

    def events_of(self, app: web.Application) -> Events | None:
        cluster = app.get(CLUSTER)
        if cluster is not None and self.events is None:
            self.events = Events(cluster)
        return self.events


_STATE: web.AppKey[_Console] = web.AppKey("sluice_console", _Console)


def render(request: web.Request, name: str, *, status: int = 200, **context: Any) -> web.Response:
    """A template as an HTML response with the console's security headers."""
    template = _TEMPLATES.get_template(name)
    text = template.render(mode=_mode(request), **context)
    return web.Response(
        text=text, status=status, content_type="text/html", headers=_SECURITY_HEADERS
    )


def _mode(request: web.Request) -> str:
    return "kubernetes" if CLUSTER in request.app else "manifests"


def _fragment(request: web.Request) -> bool:
    return request.headers.get("HX-Request") == "true"


def _same_origin(request: web.Request) -> bool:
    """A browser's POST names its page's origin: it must be this console's (SameSite=Strict
    already keeps other sites' cookies out; this refuses a page on another port too)."""
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


def _refused(request: web.Request, status: int, title: str, text: str) -> web.Response:
    return render(request, "refused.html", status=status, title=title, text=text, session=None)


def _signed_out(request: web.Request) -> web.Response:
    """No session: fragments tell htmx to go to the login page; pages redirect there."""
    if _fragment(request) or request.method != "GET":
        return web.Response(status=401, headers={"HX-Redirect": "/ui/login"})
    raise web.HTTPSeeOther(f"/ui/login?next={request.path}")


def _gate(page: Page) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def gated(request: web.Request) -> web.StreamResponse:
        proxy = request.app[PROXY]
        token = proxy.admin_token
        if not token:
            return _refused(request, 403, "The console is off",
                            "No admin token is configured (--admin-token-file).")  # fmt: skip
        refused = host_refusal(request, proxy.allowed_hosts)
        if refused is not None:
            return refused
        session = auth.session_of(token, request.cookies.get(auth.COOKIE), proxy.clock())
        if session is None:
            return _signed_out(request)
        if request.method == "POST":
            form = await request.post()
            presented = request.headers.get("X-CSRF-Token") or form.get("csrf")
            if not _same_origin(request) or not session.allows(
                presented if isinstance(presented, str) else None
            ):
                return _refused(request, 403, "Refused",
                                "This action did not carry the console's CSRF token.")  # fmt: skip
        return await page(request, session)

    return gated


async def _index(_: web.Request) -> web.StreamResponse:
    raise web.HTTPSeeOther("/ui/upstreams")


async def _login_page(request: web.Request) -> web.StreamResponse:
    if not request.app[PROXY].admin_token:
        return _refused(request, 403, "The console is off",
                        "No admin token is configured (--admin-token-file).")  # fmt: skip
    return render(request, "login.html", session=None, error=None, next=_next(request))


def _next(request: web.Request) -> str:
    """Where to go after logging in: a console path, never another site."""
    wanted = request.query.get("next", "")
    return wanted if wanted.startswith("/ui/") and "//" not in wanted else "/ui/upstreams"


async def _login(request: web.Request) -> web.StreamResponse:
    proxy = request.app[PROXY]
    token = proxy.admin_token
    refused = host_refusal(request, proxy.allowed_hosts)
    if refused is not None:
        return refused
    if not token or not _same_origin(request):
        return _refused(request, 403, "Refused", "The console cannot be logged into from here.")
    presented = (await request.post()).get("token")
    if not isinstance(presented, str) or not auth.token_matches(token, presented.strip()):
        return render(request, "login.html", status=401, session=None, next=_next(request),
                      error="That is not the admin token. Nothing was changed.")  # fmt: skip
    response = web.HTTPSeeOther(_next(request))
    response.set_cookie(
        auth.COOKIE, auth.cookie_for(token, proxy.clock()), max_age=auth.SESSION_SECONDS,
        path="/ui", httponly=True, samesite="Strict", secure=request.secure,
    )  # fmt: skip
    raise response


async def _logout(_: web.Request, __: auth.Session) -> web.StreamResponse:
    response = web.HTTPSeeOther("/ui/login")
    response.del_cookie(auth.COOKIE, path="/ui")
    raise response


def _state_filter(request: web.Request) -> str | None:
    wanted = request.query.get("state") or None
    return wanted if wanted in {"Closed", "Open", "HalfOpen"} else None


async def _upstreams(request: web.Request, session: auth.Session) -> web.StreamResponse:
    state = _state_filter(request)
    name = "_rows.html" if _fragment(request) else "upstreams.html"
    rows = views.rows(request.app[PROXY], request.app.get(CLUSTER), state)
    return render(request, name, session=session, rows=rows, state=state)


def _key(request: web.Request) -> Ref:
    key = Ref(request.match_info["namespace"], request.match_info["name"])
    if key not in request.app[PROXY].table.targets:
        raise web.HTTPNotFound(text=f"no upstream {key.namespace}/{key.name}")
    return key


async def _events(request: web.Request, key: Ref) -> tuple[list[EventLine], str | None]:
    events = request.app[_STATE].events_of(request.app)
    if events is None:
        return [], None
    events.keep(set(request.app[PROXY].table.targets))
    found = await events.of(key)
    return (
        ([], f"The Upstream's Events could not be read: {found}")
        if isinstance(found, str)
        else (found, None)
    )


async def _upstream(request: web.Request, session: auth.Session) -> web.StreamResponse:
    proxy, key = request.app[PROXY], _key(request)
    target, now = proxy.table.targets[key], proxy.clock()
    events, events_error = await _events(request, key)
    minutes = proxy.history.minutes(key, now)
    context: dict[str, Any] = {
        "session": session,
        "row": views.row(proxy, target, request.app.get(CLUSTER), now),
        "target": target,
        "timeline": views.timeline(proxy.history.changes(key), events),
        "events_error": events_error,
        "attempts": charts.attempts_chart(minutes),
        "latency": charts.latency_chart(minutes),
        "policy": views.policy_rows(target.policy),
        "routes": views.routes_of(views.routes(proxy), key),
        "actions": _ACTION_WORDS,
    }
    name = "_live.html" if _fragment(request) else "upstream.html"
    return render(request, name, **context)


async def _act(request: web.Request, session: auth.Session) -> web.StreamResponse:
    """Force or reset one breaker through the admin API's own code; the result, in words."""
    key = _key(request)
    admin = request.app.get(ADMIN_ACTIONS)
    try:
        action = AdminAction.parse(request.match_info["action"])
    except AdminActionError as e:
        return _result(request, session, 400, str(e))
    if admin is None:
        return _result(request, session, 501, "this proxy cannot change breakers")
    try:
        await admin(key, action)
    except (SluiceError, OSError) as e:  # the API server refused or went away
        return _result(request, session, 502, f"{key.name}: {type(e).__name__}: {e}")
    if not _fragment(request):
        raise web.HTTPSeeOther(f"/ui/upstreams/{key.namespace}/{key.name}")
    proxy = request.app[PROXY]
    state = proxy.breakers.effective_state(proxy.table.targets[key], proxy.clock())
    text = f"{_ACTION_WORDS[action]}: done. {key.name} is {state} on this replica now."
    if CLUSTER in request.app:  # the watch brings the patch back to this replica too
        text = (f"{_ACTION_WORDS[action]}: done. The Upstream {key.namespace}/{key.name} was "
                "patched; every replica and the operator follow it within a second.")  # fmt: skip
    return _result(request, session, 200, text)


def _result(request: web.Request, session: auth.Session, status: int, text: str) -> web.Response:
    return render(request, "_result.html", status=status, session=session,
                  ok=status == 200, text=text)  # fmt: skip


async def _routes(request: web.Request, session: auth.Session) -> web.StreamResponse:
    name = "_routes.html" if _fragment(request) else "routes.html"
    routes = views.routes(request.app[PROXY])
    return render(request, name, session=session, routes=routes, api=views.API)


async def _static(request: web.Request) -> web.StreamResponse:
    name = request.match_info["file"]
    kind = _STATIC.get(name)
    if kind is None:
        raise web.HTTPNotFound()
    cache = request.app[_STATE].static
    body = cache.get(name)
    if body is None:
        body = cache[name] = (_PACKAGE / "static" / name).read_bytes()
    headers = {"Cache-Control": "max-age=3600", "X-Content-Type-Options": "nosniff"}
    return web.Response(body=body, content_type=kind, headers=headers)


def htmx_config() -> str:
    """htmx's settings (a meta tag): no inline styles or eval (the CSP forbids them), and
    errors swapped in like answers, so a refused action says why."""
    settings = {
        "includeIndicatorStyles": False,
        "allowEval": False,
        "allowScriptTags": False,
        "responseHandling": [{"code": "204", "swap": False}, {"code": "...", "swap": True}],
    }
    return json.dumps(settings)


_TEMPLATES.globals["htmx_config"] = htmx_config


def console_routes(app: web.Application) -> None:
    """Serve the console under /ui on ``app`` (where /admin is served)."""
    app[_STATE] = _Console()
    router = app.router
    router.add_get("/ui", _index)
    router.add_get("/ui/", _index)
    router.add_get("/ui/login", _login_page)
    router.add_post("/ui/login", _login)
    router.add_post("/ui/logout", _gate(_logout))
    router.add_get("/ui/static/{file}", _static)
    router.add_get("/ui/upstreams", _gate(_upstreams))
    router.add_get("/ui/upstreams/{namespace}/{name}", _gate(_upstream))
    router.add_post("/ui/upstreams/{namespace}/{name}/{action}", _gate(_act))
    router.add_get("/ui/routes", _gate(_routes))
