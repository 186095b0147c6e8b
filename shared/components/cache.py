"""Mount results cached per prefix and account for a component's ``cache_ttl``."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

__all__ = ["MountCache"]

PRUNE_MIN = 1024


class MountCache:
    """An in-process TTL cache of mounted state; values are copied in and out."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[tuple[str, int], tuple[float, dict[str, Any]]] = {}
        self.hits = 0
        self.misses = 0
        self._prune_at = PRUNE_MIN

    def get(self, prefix: str, account_id: int) -> dict[str, Any] | None:
        entry = self._entries.get((prefix, account_id))
        if entry is None or entry[0] <= self._clock():
            self._entries.pop((prefix, account_id), None)
            self.misses += 1
            return None
        self.hits += 1
        return copy.deepcopy(entry[1])

    def set(self, prefix: str, account_id: int, state: dict[str, Any], ttl: float) -> None:
        now = self._clock()
        if len(self._entries) >= self._prune_at:  # accounts come and go: drop the expired
            self._entries = {k: e for k, e in self._entries.items() if e[0] > now}
            self._prune_at = max(PRUNE_MIN, 2 * len(self._entries))
        self._entries[(prefix, account_id)] = (now + ttl, copy.deepcopy(state))

    def __len__(self) -> int:
        return len(self._entries)

    def invalidate(self, prefix: str, account_id: int | None = None) -> None:
        """Forget one account's entry, or every entry of ``prefix``."""
        if account_id is not None:
            self._entries.pop((prefix, account_id), None)
            return
        for key in [k for k in self._entries if k[0] == prefix]:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()
