"""The latest quote of every ticker a service has seen on ``prices.ticks``.

Database prices lag the feed by up to a write interval, and mounts may come from the
cache. A component that follows ticks is brought up to date right after its mount by
replaying the book through its own ``on_ws_message``, so a page load or a reconnect
shows current prices without a second copy of the tick logic.
"""

from __future__ import annotations

from typing import Any

from shared import wire

__all__ = ["PriceBook"]


class PriceBook:
    def __init__(self) -> None:
        self._quotes: dict[str, Any] = {}

    def __len__(self) -> int:
        return len(self._quotes)

    async def on_tick(self, _subject: str, payload: dict[str, Any]) -> None:
        prices = payload.get("prices")
        if isinstance(prices, dict):
            self._quotes.update(prices)

    def as_tick(self) -> dict[str, Any]:
        """The book as a ``price_tick`` message (a copy: components may keep what they get)."""
        return {"event": wire.EVENT_PRICE_TICK, "prices": dict(self._quotes)}
