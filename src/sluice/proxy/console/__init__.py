"""The operator's console in the browser, under ``/ui`` where ``/admin`` is served: every
breaker at a glance, one upstream's timeline and charts, the routes' order right now, and
the buttons to force or reset a breaker.

Server-rendered (Jinja2) with one vendored, checksummed script library (htmx, which polls
fragments in place; ``static/VENDORED.json``): no build chain, no CDN, nothing fetched at run
time. It reads the snapshots ``/health`` reads and this replica's bounded history
(``sluice.proxy.history``); it adds nothing to the request path. Its actions go through the
admin API's code. It must not import the request path's modules beyond the app keys and the
state it reads, nor be imported by them.
"""

from __future__ import annotations

from sluice.proxy.console.cluster import CLUSTER, ClusterView
from sluice.proxy.console.pages import console_routes

__all__ = ["CLUSTER", "ClusterView", "console_routes"]
