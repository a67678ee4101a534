"""Anthropic: the key in ``x-api-key``, with the API version every request must name."""

from __future__ import annotations

from sluice.providers.base import Provider

__all__ = ["ANTHROPIC", "ANTHROPIC_VERSION"]

ANTHROPIC_VERSION = "2023-06-01"

ANTHROPIC = Provider(
    "anthropic", key_header="x-api-key", fixed_headers=(("anthropic-version", ANTHROPIC_VERSION),)
)
