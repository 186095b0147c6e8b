"""Failed-login throttling: a sliding window of failures per key (username, client address).

In memory, per gateway process: with several replicas each applies the limit on its own, which
still bounds guessing to ``replicas × max_failures`` per window.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable

__all__ = ["FailureThrottle"]


class FailureThrottle:
    def __init__(
        self,
        max_failures: int,
        window_s: float,
        *,
        max_keys: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_failures = max_failures
        self.window_s = window_s
        self.max_keys = max_keys
        self._clock = clock
        self._failures: dict[str, deque[float]] = {}

    def _recent(self, key: str, now: float) -> deque[float] | None:
        hits = self._failures.get(key)
        if hits is None:
            return None
        while hits and hits[0] <= now - self.window_s:
            hits.popleft()
        if not hits:
            del self._failures[key]
            return None
        return hits

    def retry_after(self, keys: Iterable[str]) -> int | None:
        """Seconds until a blocked key may try again, or ``None`` when none is blocked."""
        now = self._clock()
        waits = [
            hits[-self.max_failures] + self.window_s - now
            for key in keys
            if (hits := self._recent(key, now)) is not None and len(hits) >= self.max_failures
        ]
        return max(1, math.ceil(max(waits))) if waits else None

    def fail(self, keys: Iterable[str]) -> None:
        now = self._clock()
        for key in keys:
            hits = self._recent(key, now)
            if hits is None:
                if len(self._failures) >= self.max_keys:
                    del self._failures[next(iter(self._failures))]
                hits = self._failures[key] = deque(maxlen=self.max_failures)
            hits.append(now)

    def reset(self, key: str) -> None:
        self._failures.pop(key, None)
