"""What a refused manifest or spec says to a person: the field and the reason. Pure."""

from __future__ import annotations

import pydantic

__all__ = ["describe"]


def describe(error: pydantic.ValidationError, *, under: str = "") -> str:
    """The first thing ``error`` refuses, as ``field.path: message``; ``under`` is the path
    the validated document sits at (``spec``), if any."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    if under:
        where = f"{under}.{where}"
    return f"{where}: {first['msg']}"
