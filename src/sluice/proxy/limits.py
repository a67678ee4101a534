"""The proxy's own limits: what one replica accepts from clients and from upstreams.

Every wait on a client or an upstream is bounded, and every buffer has a size limit, so one
client (or one broken upstream) cannot hold a replica's memory, connections or concurrency
slots. The defaults are sized for real LLM traffic; docs/security.md lists them with the flags
that change them.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Limits"]

MiB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    # A request body (JSON; images as base64 make the big ones). Beyond it: 413.
    max_request_bytes: int = 16 * MiB
    # A model name. Real ones are short; a long one would only fill caches and logs. 400.
    max_model_length: int = 256
    # Requests in progress on this replica. Beyond it: a fast 503 "overloaded" with Retry-After,
    # never a queue. (Upstreams' own limits.maxConcurrent are separate.)
    max_concurrent_requests: int = 512
    # An upstream's complete (non-streamed) answer: large enough for big embedding batches.
    # Beyond it: 502 "answer_too_large", not counted against the upstream. Streams are relayed
    # as they come and are bounded by time instead.
    max_answer_bytes: int = 64 * MiB
    # Seconds for a request body to arrive once its head has. Beyond it: 408, connection closed.
    request_body_timeout: float = 30.0
    # Seconds one write of the answer may wait for a client that does not read. Beyond it the
    # client is dropped (its attempt is "ignored": not the upstream's fault).
    client_write_timeout: float = 30.0
    # Seconds an idle keep-alive connection stays open, which also bounds how long a request
    # head may take to arrive (aiohttp's keepalive_timeout).
    idle_timeout: float = 75.0
    # Client connections open at once. Beyond it a new connection is closed at once (the
    # proxy's file descriptors stay for upstreams). Idle ones close after idle_timeout.
    max_connections: int = 4096
