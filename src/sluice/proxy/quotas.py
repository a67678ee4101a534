"""This replica's rate limits: one :class:`~sluice.core.ratelimit.Allowance` per Upstream.

An Upstream with ``limits.requestsPerMinute`` or ``limits.tokensPerMinute`` gets an allowance
when the table is built; any other gets one the first time its provider's headers say
something of the provider's own limits (so an Upstream without limits costs one dict lookup
per candidate). The picker asks :meth:`RateLimits.get` before it takes a permit; the operator
leader's answers set the shares (:meth:`RateLimits.apply`); without a leader (standalone, or
before the first answer) a replica's share is the whole limit, and when the leader stops
answering a replica keeps its last shares (fail-static, see docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from sluice.core.ratelimit import Allowance, ProviderLimits, Reservation
from sluice.core.reports import Share
from sluice.proxy.table import Key, Table, Target

__all__ = ["DEFAULT_OUTPUT_ESTIMATE", "RateLimits", "estimate_tokens"]

# Output tokens a request is assumed to use when it sets no maximum (settled at its end).
DEFAULT_OUTPUT_ESTIMATE = 256
_MAX_ESTIMATE = 10_000_000
# The request fields that cap a request's output, per API.
_OUTPUT_CAPS = ("max_tokens", "max_completion_tokens", "max_output_tokens")


def estimate_tokens(body: Mapping[str, Any], raw: bytes) -> int:
    """A request's tokens before it is sent: its input (about four bytes a token, the rule of
    thumb OpenAI gives for English) and its output cap (or a default)."""
    output = DEFAULT_OUTPUT_ESTIMATE
    for name in _OUTPUT_CAPS:
        cap = body.get(name)
        if type(cap) is int and cap > 0:
            output = cap
            break
    return min(len(raw) // 4 + output, _MAX_ESTIMATE)


class RateLimits:
    def __init__(self) -> None:
        self._allowances: dict[Key, Allowance] = {}
        self.shared = False  # a leader has answered with shares at least once
        self.answered_at: float | None = None  # when the last answer came (clock time)
        self.leader_lost_at: float | None = None  # since when the leader has not answered
        # Some Upstream limits tokens, or a provider said how many it has left: estimate each
        # request's tokens (else they reserve none, and a provider's token count is moot).
        self.has_token_limits = False
        # Following a leader (--report-to): a limit this replica has no share of yet is held
        # at 0 until the leader's answer (at most an interval or two), so replicas starting
        # together, or a changed limit, never spend the whole limit each.
        self.led = False
        self._awaiting: set[Key] = set()

    def follow_leader(self) -> None:
        """From now on shares come from the leader; until its first answer, none."""
        self.led = True
        for key, allowance in self._allowances.items():
            self._await(key, allowance)

    def _await(self, key: Key, allowance: Allowance) -> None:
        if allowance.limit_requests is not None or allowance.limit_tokens is not None:
            allowance.set_share(0, 0)
            self._awaiting.add(key)

    def get(self, key: Key) -> Allowance | None:
        return self._allowances.get(key)

    def items(self) -> Iterable[tuple[Key, Allowance]]:
        return self._allowances.items()

    def sync(self, table: Table) -> None:
        """The table changed: allowances for limited Upstreams, limits updated in place (what
        was taken this minute still counts), gone Upstreams forgotten."""
        kept: dict[Key, Allowance] = {}
        for key, target in table.targets.items():
            allowance = self._allowances.get(key)
            requests, tokens = target.requests_per_minute, target.tokens_per_minute
            if allowance is not None:
                changed = (allowance.limit_requests, allowance.limit_tokens) != (requests, tokens)
                allowance.set_limits(requests, tokens)
            elif requests is not None or tokens is not None:
                allowance, changed = Allowance(requests, tokens), True
            else:
                continue
            kept[key] = allowance
            if changed and self.led and self.leader_lost_at is None:
                self._await(key, allowance)
        self._allowances = kept
        self._awaiting &= kept.keys()
        self.has_token_limits = any(
            a.limit_tokens is not None or a.heard_tokens for a in kept.values()
        )

    def settle(self, key: Key, reservation: Reservation, tokens: int, now: float) -> None:
        """A request ended having used ``tokens``: its reservation corrected (if the Upstream
        still has its allowance; a reload that dropped the limit dropped the count too)."""
        allowance = self._allowances.get(key)
        if allowance is not None:
            allowance.settle(reservation, tokens, now)

    def heed(self, target: Target, said: ProviderLimits, now: float) -> None:
        """What the provider's headers said of its own limits."""
        allowance = self._allowances.get(target.key)
        if allowance is None:
            allowance = self._allowances[target.key] = Allowance(None, None)
        allowance.heed(said, now)
        if said.tokens_remaining is not None:
            self.has_token_limits = True

    def apply(self, shares: Iterable[Share], now: float) -> None:
        """The leader's answer: each Upstream's share for this replica."""
        for share in shares:
            allowance = self._allowances.get((share.namespace, share.name))
            if allowance is not None:
                allowance.set_share(share.requests_per_minute, share.tokens_per_minute)
                self._awaiting.discard((share.namespace, share.name))
        self.shared = True
        self.answered_at = now
        self.leader_lost_at = None

    def never_fits(self, key: Key, tokens: int) -> bool:
        """Whether a request of ``tokens`` is over the Upstream's whole tokensPerMinute (no
        share, no wait could ever let it through)."""
        allowance = self._allowances.get(key)
        return allowance is not None and (allowance.limit_tokens or tokens) < tokens

    def lost_leader(self, now: float) -> None:
        """The leader stopped answering: keep the last shares (fail-static). A limit this
        replica never had a share of gets the whole limit, as if alone (fail-open)."""
        if self.leader_lost_at is None:
            self.leader_lost_at = now
        for key in self._awaiting:
            allowance = self._allowances[key]
            allowance.share_requests = allowance.limit_requests
            allowance.share_tokens = allowance.limit_tokens
        self._awaiting.clear()

    def view(self, key: Key, now: float) -> dict[str, Any]:
        """For /health: each limit, this replica's share of it and what it took in the last
        minute, and whose share it is (``whole``: alone, or the leader never answered;
        ``awaiting``: held at 0 for the leader's first answer; ``leader``: the operator's;
        ``last``: the last one kept while it is unreachable)."""
        allowance = self._allowances.get(key)
        if allowance is None or (
            allowance.limit_requests is None and allowance.limit_tokens is None
        ):
            return {}
        view: dict[str, Any] = {}
        for name, limit, share, count in (
            ("requestsPerMinute", allowance.limit_requests, allowance.share_requests,
             allowance.requests),
            ("tokensPerMinute", allowance.limit_tokens, allowance.share_tokens, allowance.tokens),
        ):  # fmt: skip
            if limit is not None:
                count.advance(now)
                view[name] = {"limit": limit, "share": share, "taken": round(count.total)}
        if key in self._awaiting:
            view["shareFrom"] = "awaiting"  # the leader's first answer, at most a moment
        elif not self.shared:
            view["shareFrom"] = "whole"
        else:
            view["shareFrom"] = "leader" if self.leader_lost_at is None else "last"
        return {"rateLimits": view}
