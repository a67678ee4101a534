"""The proxy: an OpenAI-compatible gateway that routes around open circuits and fails over.

Thin glue around the core: ``table`` (the routing table, pure), ``breakers`` (each replica's
local breakers and the admission rule), ``exchange`` (one request: attempts, failover,
streaming), ``server`` (the aiohttp app), ``manifests`` and ``standalone`` (no cluster).
"""
