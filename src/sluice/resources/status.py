"""An Upstream's status, written and read through the models (``UpstreamStatus`` and its
parts in ``sluice.resources.models``), which also give the CRD its status schema.

The operator writes status with :func:`status_patch`: every field, ``None`` where there is no
value, so that a JSON merge patch deletes what no longer applies. Readers never trust status to
be well formed (anyone who may write it can put anything there the schema admits, and a string
is not necessarily a time), so :func:`read_status` and :func:`breaker_view` never raise: what
cannot be read is left out, as if it were not there.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pydantic

from sluice.core import State
from sluice.resources.models import BreakerStatus, UpstreamStatus
from sluice.resources.times import epoch_or_none

__all__ = ["BreakerView", "breaker_view", "read_status", "status_patch"]

_M = TypeVar("_M", bound=pydantic.BaseModel)
_DROP = object()  # marks a list item to leave out
_MAX_ROUNDS = 10  # each round leaves out everything the last validation refused
_OPEN_UNTIL = BreakerStatus.model_fields["open_until"].alias or "openUntil"


def status_patch(status: UpstreamStatus) -> dict[str, Any]:
    """The JSON of a status to patch with: manifests' names, every field, ``None`` included
    (in a merge patch, ``None`` deletes the field)."""
    return status.model_dump(by_alias=True, mode="json")


def read_status(raw: object) -> UpstreamStatus:
    """An Upstream's status as found (``None``, or the object's ``status``), leniently: an
    unknown field, a value of the wrong kind or a list item that cannot be read is left out."""
    return _lenient(UpstreamStatus, raw) or UpstreamStatus()


def _lenient(model: type[_M], raw: object) -> _M | None:
    """``raw`` validated as ``model``, leaving out whatever the validation refuses."""
    if not isinstance(raw, Mapping):
        return None
    data: Any = raw
    for _ in range(_MAX_ROUNDS):
        try:
            return model.model_validate(data)
        except pydantic.ValidationError as e:
            if data is raw:
                data = copy.deepcopy(dict(raw))  # never change the caller's object
            if not _leave_out(data, [error["loc"] for error in e.errors()]):
                return None
    return None


def _leave_out(data: dict[str, Any], locations: list[tuple[int | str, ...]]) -> bool:
    """Remove the deepest part of ``data`` each location reaches; False if one reaches none
    (the refusal is of the whole)."""
    lists: list[list[Any]] = []
    for location in locations:
        reached = _deepest(data, location)
        if reached is None:
            return False
        container, key = reached
        if isinstance(container, list):
            container[key] = _DROP  # indexes stay valid until every location is handled
            lists.append(container)
        else:
            container.pop(key, None)
    for items in lists:
        items[:] = [item for item in items if item is not _DROP]
    return True


def _has(node: Any, step: int | str) -> bool:
    if isinstance(node, dict):
        return step in node
    return isinstance(node, list) and isinstance(step, int) and 0 <= step < len(node)


def _deepest(data: dict[str, Any], location: tuple[int | str, ...]) -> tuple[Any, Any] | None:
    """The container and key of the deepest part of ``data`` on ``location``, if any."""
    reached: tuple[Any, Any] | None = None
    node: Any = data
    for step in location:
        if not _has(node, step):
            break
        reached, node = (node, step), node[step]
    return reached


@dataclass(frozen=True)
class BreakerView:
    """The operator's breaker as an Upstream's status says it (at least one state)."""

    state: State | None  # the state it wrote (an override wins)
    automatic_state: State | None  # under an override: what the evidence says
    open_until: float | None  # wall-clock seconds: when the open period ends
    # What the evidence says, whatever the override: automatic_state under one, else state.
    automatic: State = field(init=False)

    def __post_init__(self) -> None:
        automatic = self.automatic_state or self.state
        if automatic is None:
            raise ValueError("a breaker view needs a state")
        object.__setattr__(self, "automatic", automatic)


def breaker_view(status: object, problems: list[str] | None = None) -> BreakerView | None:
    """The operator's breaker from an Upstream's status (``None``, or the object's ``status``),
    or ``None`` if it says no state that can be read. Never raises; an unknown or malformed
    field is ignored, but an ``openUntil`` that is not a time makes the whole view ``None``
    (an Open state without its end would hold the upstream off for good): that is added to
    ``problems``, naming the field from ``status.``; say which object before it."""
    raw = status.get("breaker") if isinstance(status, Mapping) else None
    breaker = _lenient(BreakerStatus, raw)
    if breaker is None or not isinstance(raw, Mapping):
        return None
    until = raw.get(_OPEN_UNTIL)
    open_until = epoch_or_none(until) if until else None
    if until and open_until is None:
        if problems is not None:
            problems.append(
                f"status.breaker.{_OPEN_UNTIL} {until!r} is not an RFC 3339 time; the "
                "operator's breaker state is ignored"
            )
        return None
    state = None if breaker.state is None else State(breaker.state)
    automatic = None if breaker.automatic_state is None else State(breaker.automatic_state)
    if state is None and automatic is None:
        return None
    return BreakerView(state, automatic, open_until)
