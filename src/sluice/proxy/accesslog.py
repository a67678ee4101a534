"""The access log: one JSON object per API request, a line each."""

from __future__ import annotations

import logging
from typing import Any, TextIO

import orjson

__all__ = ["AccessLog"]

log = logging.getLogger("sluice.proxy")


class AccessLog:
    """One JSON object per API request, a line each, written to ``stream`` in batches: when
    ``batch`` lines are waiting, and at least every half second while the app runs (and at
    exit). Not a ``logging`` logger: its record machinery took about 6% of the proxy's
    profile samples, and log collectors want the bare JSON lines anyway."""

    def __init__(self, stream: TextIO, *, batch: int = 512) -> None:
        self.stream = stream
        self.batch = batch
        self._lines: list[str] = []

    def write(self, record: dict[str, Any]) -> None:
        lines = self._lines
        lines.append(orjson.dumps(record).decode())
        if len(lines) >= self.batch:
            self.flush()

    def flush(self) -> None:
        if self._lines:
            text = "\n".join(self._lines) + "\n"
            self._lines.clear()
            try:
                self.stream.write(text)
                self.stream.flush()
            except (OSError, ValueError) as e:  # a closed or broken stream: say so once
                log.warning("access log lost %d line(s): %s", text.count("\n"), e)
