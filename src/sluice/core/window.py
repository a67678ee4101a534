"""A sliding time window of call counts, in O(1) per call and fixed memory.

The window is a ring of ``buckets`` equal slices. A call lands in the slice its time falls in
and is forgotten when that slice leaves the window, so a call counts for between
``window - window/buckets`` and ``window`` seconds: the window slides in ``window/buckets``
steps. Running totals are kept, so reading them costs nothing. Time running backwards (a
stepped wall clock) counts the call in the newest slice rather than corrupting the ring.
"""

from __future__ import annotations

import math

__all__ = ["SlidingWindow"]


class SlidingWindow:
    __slots__ = (
        "_bucket_width",
        "_failures",
        "_head",
        "_size",
        "_slow",
        "_total",
        "failures",
        "slow",
        "total",
    )

    def __init__(self, window: float, *, buckets: int = 10) -> None:
        self._size = buckets
        self._bucket_width = window / buckets
        self._total = [0] * buckets
        self._failures = [0] * buckets
        self._slow = [0] * buckets
        self._head: int | None = None  # index (time // width) of the newest slice
        self.total = 0
        self.failures = 0
        self.slow = 0

    def advance(self, now: float) -> int:
        """Forget slices that left the window at ``now``; return the ring slot for ``now``."""
        index = math.floor(now / self._bucket_width)
        head = self._head
        if head is None:
            self._head = index
            return index % self._size
        if index <= head:
            return head % self._size
        for step in range(head + 1, head + 1 + min(index - head, self._size)):
            slot = step % self._size
            self.total -= self._total[slot]
            self.failures -= self._failures[slot]
            self.slow -= self._slow[slot]
            self._total[slot] = self._failures[slot] = self._slow[slot] = 0
        self._head = index
        return index % self._size

    def add(self, now: float, *, failed: bool, slow: bool, count: int = 1) -> None:
        slot = self.advance(now)
        self._total[slot] += count
        self.total += count
        if failed:
            self._failures[slot] += count
            self.failures += count
        if slow:
            self._slow[slot] += count
            self.slow += count

    def clear(self) -> None:
        for counts in (self._total, self._failures, self._slow):
            counts[:] = [0] * self._size
        self._head = None
        self.total = self.failures = self.slow = 0
