"""OpenAI and OpenAI-compatible servers (vLLM, llama.cpp, ...): ``Authorization: Bearer``."""

from __future__ import annotations

from sluice.providers.base import Provider

__all__ = ["OPENAI", "OPENAI_COMPATIBLE"]

OPENAI = Provider("openai", key_header="Authorization", key_format="Bearer {key}")
OPENAI_COMPATIBLE = Provider(
    "openai-compatible", key_header="Authorization", key_format="Bearer {key}"
)
