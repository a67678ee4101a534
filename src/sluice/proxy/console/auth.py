"""Who may use the console: the admin token, entered once, then a signed session cookie.

The cookie is ``<session id>.<issued>.<mac>``, signed with a key derived from the admin token,
so every replica with the same token accepts it (behind a Service a person's requests land on
any of them), a new token ends every session, and the server keeps no session store. It is
``HttpOnly`` (page scripts cannot read it) and ``SameSite=Strict`` (other sites' pages cannot
send it). Every POST also carries the session's CSRF token, an HMAC of the session id, as a
form field or an ``X-CSRF-Token`` header, compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass

__all__ = ["COOKIE", "SESSION_SECONDS", "Session", "cookie_for", "session_of", "token_matches"]

COOKIE = "sluice_console"
SESSION_SECONDS = 12 * 3600  # a shift on call
_CLOCK_SKEW = 60.0  # a cookie issued by a replica whose clock is a little ahead


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    csrf: str  # what every POST of this session must carry

    def allows(self, presented: str | None) -> bool:
        """The CSRF token ``presented`` with a POST is this session's."""
        return presented is not None and hmac.compare_digest(
            presented.encode("utf-8", "surrogateescape"), self.csrf.encode()
        )


def _key(token: str) -> bytes:
    return hmac.new(token.encode(), b"sluice console session v1", hashlib.sha256).digest()


def _mac(token: str, text: str) -> str:
    return hmac.new(_key(token), text.encode(), hashlib.sha256).hexdigest()


def token_matches(token: str, presented: str) -> bool:
    """The admin token, compared in constant time (as /admin compares it)."""
    return hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), token.encode())


def cookie_for(token: str, now: float) -> str:
    """A new session's cookie value."""
    signed = f"{secrets.token_urlsafe(16)}.{int(now)}"
    return f"{signed}.{_mac(token, signed)}"


def session_of(token: str, cookie: str | None, now: float) -> Session | None:
    """The session a cookie proves, or None: absent, forged, signed with another token, or
    older than SESSION_SECONDS."""
    if not cookie or cookie.count(".") != 2:
        return None
    session_id, issued, mac = cookie.split(".")
    expected = _mac(token, f"{session_id}.{issued}")
    if not hmac.compare_digest(mac.encode("utf-8", "surrogateescape"), expected.encode()):
        return None
    if not issued.isdigit() or not -_CLOCK_SKEW <= now - int(issued) <= SESSION_SECONDS:
        return None
    return Session(session_id, _mac(token, f"csrf.{session_id}"))
