"""The proxy: an OpenAI-compatible gateway that routes around open circuits and fails over.

Thin glue around the core. A request goes, top to bottom (``lint-imports`` keeps it so):
``server`` (the app and its server) → ``handlers`` (the endpoints) → ``intake`` (who may call,
the body) → ``picking`` (who gets it: candidates, score, filter, pick) → ``exchange`` (rounds,
failover, the answer) → ``attempt`` (one upstream, once) → ``client`` (HTTP/1.1 to upstreams).
Beside it: ``table`` (the routing table, compiled once, pure), ``breakers`` (each replica's
local breakers and the admission rule), ``load`` (in flight, latency, round robin, sticky),
``state`` (a replica's shared state), ``access`` and ``limits``; the two sources of the table:
``manifests`` with ``standalone`` (no cluster) and ``kubernetes``.
"""
