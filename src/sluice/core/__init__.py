"""The pure breaker core: state machine, policies, outcome classification.

Purely computational: no I/O, no clock of its own (every call takes ``now``), no randomness
it does not take as an argument, and no imports of aiohttp, kopf, kubernetes or
prometheus_client (``lint-imports`` enforces it). The operator, each proxy replica and the
standalone mode all run this one implementation.
"""

from sluice.core.breaker import (
    ADMITTED,
    BreakerSnapshot,
    CircuitBreaker,
    Permit,
    Reason,
    State,
    Transition,
    effective_state,
)
from sluice.core.outcome import (
    ErrorKind,
    Outcome,
    OutcomeKind,
    classify_error,
    classify_status,
    parse_retry_after,
)
from sluice.core.policy import (
    DEFAULT_FAILURE_STATUSES,
    BreakerPolicy,
    FailureRate,
    Growth,
    HalfOpen,
    PolicyError,
    SlowCalls,
    format_duration,
    parse_duration,
    parse_status_set,
)

__all__ = [
    "ADMITTED",
    "DEFAULT_FAILURE_STATUSES",
    "BreakerPolicy",
    "BreakerSnapshot",
    "CircuitBreaker",
    "ErrorKind",
    "FailureRate",
    "Growth",
    "HalfOpen",
    "Outcome",
    "OutcomeKind",
    "Permit",
    "PolicyError",
    "Reason",
    "SlowCalls",
    "State",
    "Transition",
    "classify_error",
    "classify_status",
    "effective_state",
    "format_duration",
    "parse_duration",
    "parse_retry_after",
    "parse_status_set",
]
