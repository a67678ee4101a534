"""Times as Kubernetes writes them in objects (RFC 3339, UTC, second precision). Pure."""

from __future__ import annotations

import datetime as dt

__all__ = ["epoch_or_none", "parse_rfc3339", "rfc3339"]


def rfc3339(timestamp: float) -> str:
    """Wall-clock seconds as Kubernetes writes times (UTC, second precision, Z)."""
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    """Wall-clock seconds; ValueError if ``text`` is not such a time."""
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def epoch_or_none(value: object) -> float | None:
    """Wall-clock seconds of a time read from an object, or None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        return parse_rfc3339(value)
    except ValueError:
        return None
