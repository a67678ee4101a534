"""What the console reads from the cluster in ``--kubernetes`` mode: Upstreams' status (the
operator's probe figures) from the watch the proxy keeps anyway, and their Events, read at
most every :data:`EVENTS_TTL` seconds per Upstream however many pages poll.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiohttp import web

from sluice.proxy.table import Key
from sluice.resources.times import epoch_or_none

__all__ = ["CLUSTER", "EVENTS_TTL", "ClusterView", "EventLine", "Events"]

EVENTS_TTL = 5.0
EVENTS_TIMEOUT = 5.0  # seconds an Events list may take before the page says so


@dataclass(frozen=True)
class EventLine:
    at: float | None
    component: str
    reason: str
    message: str
    warning: bool


class ClusterView(Protocol):
    def status(self, key: Key) -> Mapping[str, Any] | None:
        """The Upstream's status as the watch last saw it."""

    async def events(self, key: Key) -> list[dict[str, Any]]:
        """The Upstream's Events from the API server (raw, the API's field names)."""


def _line(event: Mapping[str, Any]) -> EventLine:
    when = event.get("lastTimestamp") or event.get("eventTime") or event.get("firstTimestamp")
    source = event.get("reportingComponent") or (event.get("source") or {}).get("component")
    return EventLine(
        epoch_or_none(str(when)) if when else None,
        str(source or "cluster"),
        str(event.get("reason") or ""),
        str(event.get("message") or ""),
        event.get("type") == "Warning",
    )


@dataclass
class Events:
    """A cache of each Upstream's Events in front of a :class:`ClusterView` (bounded by the
    table: the console asks only for upstreams in it, and :meth:`keep` drops the rest)."""

    cluster: ClusterView
    clock: Callable[[], float] = field(default_factory=lambda: asyncio.get_running_loop().time)
    _cached: dict[Key, tuple[float, list[EventLine] | str]] = field(default_factory=dict)
    _asking: dict[Key, asyncio.Future[list[EventLine] | str]] = field(default_factory=dict)

    async def of(self, key: Key) -> list[EventLine] | str:
        """The Events, or why they could not be read."""
        now = self.clock()
        cached = self._cached.get(key)
        if cached is not None and now - cached[0] < EVENTS_TTL:
            return cached[1]
        asking = self._asking.get(key)
        if asking is None:  # one question to the API server per Upstream, however many tabs
            asking = self._asking[key] = asyncio.ensure_future(self._ask(key))
            asking.add_done_callback(lambda _: self._asking.pop(key, None))
        found = await asyncio.shield(asking)
        self._cached[key] = (now, found)
        return found

    async def _ask(self, key: Key) -> list[EventLine] | str:
        try:
            async with asyncio.timeout(EVENTS_TIMEOUT):
                return [_line(e) for e in await self.cluster.events(key)]
        except Exception as e:  # a console page must not fail on the Events
            return f"{type(e).__name__}: {e}"

    def keep(self, keys: set[Key]) -> None:
        for key in set(self._cached) - keys:
            del self._cached[key]


CLUSTER: web.AppKey[ClusterView] = web.AppKey("sluice_console_cluster")
EventsOf = Callable[[Key], Awaitable[list[EventLine] | str]]
