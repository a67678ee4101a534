"""One client request's journey through its plan: attempt, fail over, answer.

1. The picker's plan (``sluice.proxy.picking``) yields who to try, round by round, within the
   retry budget (``retry.maxAttempts`` attempts in all); between rounds there is a back-off
   (``retry.backoff``). A candidate its breakers give no permit is never contacted.
2. Each pick is one attempt (``sluice.proxy.attempt``). A failure or a 429 moves on to the next
   pick while nothing has been sent to the client; another 4xx is the client's own and goes
   back as is; a stream is committed at its first byte.
3. Nobody admitted: ``503`` ``circuit_open`` at once, with ``Retry-After`` (or, with
   ``whenAllOpen: TryAnyway``, one attempt at the first candidate). Everybody tried and failed:
   ``502`` ``upstream_error`` with the attempt history (``429`` if all were rate limited).
"""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from sluice.core import OutcomeKind
from sluice.proxy.answers import error_response
from sluice.proxy.attempt import Answered, Call, Reply, Result, Streamed, attempt
from sluice.proxy.picking import Pick, Plan

if TYPE_CHECKING:
    from prometheus_client import Counter

__all__ = ["PASSED_BACK", "Exchange", "retry_after"]

PASSED_BACK = ("content-type", "retry-after", "x-request-id", "openai-processing-ms",
               "openai-version")  # fmt: skip


def retry_after(seconds: float) -> int:
    """A Retry-After header value: whole seconds, at least 1, capped for 'unknown'."""
    if math.isinf(seconds):
        return 30
    return max(1, math.ceil(seconds))


@dataclass(slots=True)
class Exchange:
    call: Call
    plan: Plan
    _last: Reply | None = None  # the last failed attempt's answer (a 429, a 5xx)
    _refused: Reply | None = None  # a candidate could not take the request: its 400

    async def run(self) -> web.StreamResponse:
        call, plan = self.call, self.plan
        if not plan.candidates:
            return error_response(
                404, f"The model `{call.body['model']}` does not exist or has no upstream",
                "model_not_found",
            )  # fmt: skip
        try:
            for round_ in range(plan.budget):  # a round tries each candidate once
                if round_:
                    if not call.attempts or plan.picked >= plan.budget:
                        break
                    await asyncio.sleep(plan.retry.backoff(round_))
                answered = await self._round()
                if answered is not None:
                    return answered
            if not call.attempts:
                return await self._nobody_admitted()
        finally:
            call.record["attempts"] = [a.as_dict() for a in call.attempts]
        return self._exhausted()

    async def _round(self) -> web.StreamResponse | None:
        """Try each pick of one round; the response if one answered for good."""
        for pick in self.plan.picks():
            if self.call.attempts:
                metrics = self.call.metrics
                metrics.child(metrics.failovers, self.plan.route).inc()
            answered = self._answer(pick, await attempt(self.call, pick, self.plan.per_try))
            if answered is not None:
                return answered
        return None

    def _answer(self, pick: Pick, result: Result) -> web.StreamResponse | None:
        """The client's answer if ``result`` ends the request, else None (and the reply kept)."""
        if isinstance(result, Streamed):
            self.plan.remember(pick.candidate)
            return result.response
        if isinstance(result, Answered):
            self.plan.remember(pick.candidate)
            return self._respond(result.reply, pick.candidate.target.name)
        if result.final and result.reply is not None:
            return self._respond(result.reply, None)
        if result.refused:
            self._refused = result.reply
        else:
            self._last = result.reply or self._last
        return None

    async def _nobody_admitted(self) -> web.StreamResponse:
        plan = self.plan
        if plan.unsupported == len(plan.candidates):
            return self._unsupported()
        if plan.limited and not plan.skipped:
            return self._rate_limited()
        if plan.busy and not plan.skipped:
            return self._all_busy()
        pick = plan.anyway()
        if pick is None:
            return self._circuit_open()
        answered = self._answer(pick, await attempt(self.call, pick, self.plan.per_try))
        return answered if answered is not None else self._exhausted()

    # -- answers -------------------------------------------------------------------------------

    def _circuit_open(self) -> web.Response:
        wait = retry_after(self.plan.available_in())
        return self._nobody_contacted(503, "circuit_open", "every circuit for this model is "
                                      "open", wait, self.call.metrics.rejections)  # fmt: skip

    def _rate_limited(self) -> web.Response:
        """Every candidate that could serve is at its rate limit (or busy): 429, nobody
        contacted; Retry-After when the soonest one has room again."""
        plan = self.plan
        if plan.too_large():  # waiting would never help: say so, as the provider would
            return error_response(
                400,
                f"this request needs about {plan.tokens} tokens, more than the tokensPerMinute "
                "limit of every upstream for this model; lower max_tokens or the input",
                "invalid_request_error",
                headers={"x-sluice-attempts": "0"},
            )
        wait = retry_after(plan.limit_frees_in())
        return self._nobody_contacted(429, "rate_limited", "every upstream for this model is "
                                      "at its rate limit", wait,
                                      self.call.metrics.limit_rejections)  # fmt: skip

    def _nobody_contacted(
        self, status: int, kind: str, what: str, wait: int, counter: Counter
    ) -> web.Response:
        """A fast refusal that reached no upstream: counted per route, with Retry-After."""
        plan, metrics = self.plan, self.call.metrics
        metrics.child(counter, plan.route).inc()
        names = ", ".join(sorted({c.target.name for c in plan.candidates}))
        return error_response(
            status,
            f"{what} ({names}); no upstream was contacted; retry in {wait}s",
            kind,
            headers={"Retry-After": str(wait), "x-sluice-attempts": "0"},
        )

    def _unsupported(self) -> web.Response:
        plan = self.plan
        names = ", ".join(sorted({f"{c.target.name} ({c.target.spec.provider})"
                                  for c in plan.candidates}))  # fmt: skip
        return error_response(
            400,
            f"{plan.api} cannot be served for `{self.call.body['model']}`: its upstreams "
            f"({names}) do not speak that API",
            "invalid_request_error",
            headers={"x-sluice-attempts": "0"},
        )

    def _all_busy(self) -> web.Response:
        return error_response(
            503,
            "every upstream for this model is at its maxConcurrent limit; retry shortly",
            "upstreams_busy",
            headers={"Retry-After": "1", "x-sluice-attempts": "0"},
        )

    def _exhausted(self) -> web.Response:
        attempts = self.call.attempts
        if self._refused is not None and all(a.status == 400 for a in attempts):
            return self._respond(self._refused, None)  # nobody could take it: say why
        rate_limited = str(OutcomeKind.RATE_LIMITED)
        if self._last is not None and all(a.outcome == rate_limited for a in attempts):
            return self._respond(self._last, None)
        skipped = self.plan.skipped
        also = f", {skipped} skipped with an open circuit" if skipped else ""
        return error_response(
            502,
            f"every upstream tried for `{self.call.body['model']}` failed "
            f"({len(attempts)} attempts{also})",
            "upstream_error",
            attempts=[a.as_dict(public=True) for a in attempts],
            headers={"x-sluice-attempts": str(len(attempts))},
        )

    def _respond(self, reply: Reply, upstream: str | None) -> web.Response:
        headers = {k: v for k, v in reply.headers.items() if k in PASSED_BACK}
        headers["x-sluice-attempts"] = str(len(self.call.attempts))
        if upstream is not None:
            headers["x-sluice-upstream"] = upstream
            if self.call.cost is not None:
                headers["x-sluice-cost"] = f"{self.call.cost:.9g}"
        return web.Response(status=reply.status, body=reply.body, headers=headers)
