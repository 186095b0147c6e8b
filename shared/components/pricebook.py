"""The latest quote of every ticker a service has seen on ``prices.ticks``.

Database prices lag the feed by up to a write interval, and mounts may come from the
cache. A component that follows ticks is brought up to date right after its mount by
replaying the book through its own ``on_ws_message``, so a page load or a reconnect
shows current prices without a second copy of the tick logic. The orders service prices
market orders from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shared import wire

__all__ = ["PriceBook"]


class PriceBook:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._quotes: dict[str, Any] = {}
        self._clock = clock
        self._last_tick: float | None = None

    def __len__(self) -> int:
        return len(self._quotes)

    async def on_tick(self, _subject: str, payload: dict[str, Any]) -> None:
        prices = payload.get("prices")
        if isinstance(prices, dict):
            self._quotes.update(prices)
            self._last_tick = self._clock()

    def quote(self, ticker: str) -> Any:
        """The latest quote of ``ticker`` (``{last, bid, ask, chg_pct}``), or None."""
        return self._quotes.get(ticker)

    @property
    def seen_feed(self) -> bool:
        return self._last_tick is not None

    def silent_for(self) -> float:
        """Seconds since the last tick (0 before the first one)."""
        return 0.0 if self._last_tick is None else self._clock() - self._last_tick

    def as_tick(self) -> dict[str, Any]:
        """The book as a ``price_tick`` message (a copy: components may keep what they get)."""
        return {"event": wire.EVENT_PRICE_TICK, "prices": dict(self._quotes)}
