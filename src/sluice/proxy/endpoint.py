"""Where an upstream's base URL points, parsed once when the routing table is built. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

__all__ = ["Endpoint"]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where an upstream's base URL points, parsed once."""

    scheme: str
    host: str
    port: int
    prefix: str  # the base URL's path, without a trailing slash
    host_header: str  # the whole "Host: ..." line

    @classmethod
    def parse(cls, base_url: str) -> Endpoint:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"baseURL {base_url!r} is not an http(s) URL with a host")
        default = 443 if parts.scheme == "https" else 80
        port = parts.port or default
        host = parts.hostname
        shown = f"[{host}]" if ":" in host else host
        header = shown if port == default else f"{shown}:{port}"
        ascii_header = header.encode("idna").decode("ascii")
        return cls(parts.scheme, host, port, parts.path.rstrip("/"), f"Host: {ascii_header}")
