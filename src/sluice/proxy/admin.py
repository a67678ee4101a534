"""The admin actions on a breaker, the same in both modes: what they are and how they parse.

``POST /admin/breakers/{namespace}/{name}/{open|close|auto|reset}``. Each mode carries them
out its own way (``--kubernetes`` patches the Upstream, ``--manifests`` sets this process's
override); the names, the parsing and the refusal of an unknown one live here, once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from enum import StrEnum

from sluice.core import State
from sluice.errors import ConfigurationError
from sluice.proxy.table import Key

__all__ = ["AdminAction", "AdminActionError", "AdminActions"]


class AdminActionError(ConfigurationError):
    """An admin action that does not exist; the message lists those that do."""


class AdminAction(StrEnum):
    OPEN = "open"
    CLOSE = "close"
    AUTO = "auto"
    RESET = "reset"

    @classmethod
    def parse(cls, text: str) -> AdminAction:
        try:
            return cls(text)
        except ValueError:
            names = ", ".join(a.value for a in cls)
            raise AdminActionError(f"unknown action {text[:40]!r}: use {names}") from None

    @property
    def override(self) -> State | None:
        """The ``spec.breaker.override`` this action sets (None: automatic). Reset sets none."""
        return {AdminAction.OPEN: State.OPEN, AdminAction.CLOSE: State.CLOSED}.get(self)


# How a mode carries an action out on one upstream.
AdminActions = Callable[[Key, AdminAction], Awaitable[None]]
