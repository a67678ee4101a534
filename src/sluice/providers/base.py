"""The seam every provider fills."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["Provider"]


@dataclass(frozen=True)
class Provider:
    """What differs between providers when the proxy or a probe talks to one."""

    name: str
    # The header that carries the API key, and how the key is written into it.
    key_header: str
    key_format: str = "{key}"
    # Headers every request to this provider carries (with a key).
    fixed_headers: tuple[tuple[str, str], ...] = ()
    # Query parameters the probes send (Azure's api-version).
    probe_params: Mapping[str, str] = field(default_factory=dict)

    def auth_headers(self, api_key: str | None) -> tuple[tuple[str, str], ...]:
        """The authentication headers for ``api_key`` (none without a key)."""
        if not api_key:
            return ()
        return ((self.key_header, self.key_format.format(key=api_key)), *self.fixed_headers)
