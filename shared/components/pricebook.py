"""The latest quote of every ticker a service has seen on ``prices.ticks``, with history.

Database prices lag the feed by up to a write interval, and mounts may come from the
cache. A component that follows ticks is brought up to date right after its mount by
replaying the book through its own ``on_ws_message``, so a page load or a reconnect
shows current prices without a second copy of the tick logic. The orders service prices
market orders from it. The book also keeps, per ticker, the direction of the last change
and a short history of last prices: what every trader who shows that ticker sees alike.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable
from decimal import Decimal
from typing import Any, TypeVar

from shared import domain, wire
from shared.ticks import price_direction, tick_last

__all__ = ["HISTORY_POINTS", "PriceBook"]

HISTORY_POINTS = 30
T = TypeVar("T")


class PriceBook:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._quotes: dict[str, Any] = {}
        self._last: dict[str, Decimal] = {}
        self._dir: dict[str, str] = {}
        self._history: dict[str, deque[Decimal]] = {}
        self._views: dict[tuple[str, str], tuple[Any, Any]] = {}  # (kind, ticker) → (quote, view)
        self._clock = clock
        self._last_tick: float | None = None
        self._since = clock()  # silent since the book was made, until a first tick

    def __len__(self) -> int:
        return len(self._quotes)

    def __contains__(self, ticker: object) -> bool:
        return ticker in self._quotes

    def seed(self, rows: Iterable[tuple[str, Any, Any, Any, Any]]) -> None:
        """Start from stored prices ``(ticker, last, bid, ask, prev_close)``; a ticker
        already quoted by the feed keeps its live quote."""
        for ticker, last, bid, ask, prev_close in rows:
            if ticker in self._quotes or last is None:
                continue
            last_d = domain.dec(last)
            prev = domain.dec(prev_close) if prev_close is not None else last_d
            self._quotes[ticker] = {
                "last": str(last_d),
                "bid": str(domain.dec(bid if bid is not None else last)),
                "ask": str(domain.dec(ask if ask is not None else last)),
                "chg_pct": str(domain.change_pct(last_d, prev)),
            }
            self._last[ticker] = last_d
            self._history[ticker] = deque([prev, last_d], maxlen=HISTORY_POINTS)

    async def on_tick(self, _subject: str, payload: dict[str, Any]) -> None:
        prices = payload.get("prices")
        if isinstance(prices, dict):
            self.apply(prices)

    def apply(self, prices: dict[str, Any]) -> None:
        """Take one tick's quotes (``{ticker: {last, bid, ask, chg_pct}}``)."""
        for ticker, quote in prices.items():
            try:
                last = tick_last(quote)
            except (KeyError, ValueError, ArithmeticError, TypeError):
                continue
            self._quotes[ticker] = quote
            old = self._last.get(ticker)
            if old is not None and last != old:
                self._dir[ticker] = price_direction(old, last)
            if last != old:
                self._last[ticker] = last
                history = self._history.get(ticker)
                if history is None:
                    history = self._history[ticker] = deque(maxlen=HISTORY_POINTS)
                history.append(last)
        self._last_tick = self._clock()

    def quote(self, ticker: str) -> Any:
        """The latest quote of ``ticker`` (``{last, bid, ask, chg_pct}``), or None."""
        return self._quotes.get(ticker)

    def last(self, ticker: str) -> Decimal | None:
        return self._last.get(ticker)

    def direction(self, ticker: str) -> str:
        """``"up"``, ``"down"`` or ``""``: how the last price last moved."""
        return self._dir.get(ticker, "")

    def history(self, ticker: str) -> list[Decimal]:
        return list(self._history.get(ticker, ()))

    def view(self, kind: str, ticker: str, make: Callable[[], T]) -> T:
        """``make()``, kept per ``kind`` until ``ticker``'s quote changes: what every page
        that shows the ticker shows alike (a watchlist row's quote cells) is formatted once
        per tick for all of them, and not again at every mount."""
        quote = self._quotes.get(ticker)
        kept = self._views.get((kind, ticker))
        if kept is not None and kept[0] is quote:
            view: T = kept[1]
            return view
        view = make()
        self._views[(kind, ticker)] = (quote, view)
        return view

    @property
    def seen_feed(self) -> bool:
        return self._last_tick is not None

    def silent_for(self) -> float:
        """Seconds since the last tick, or since the book was made if none came yet."""
        return self._clock() - (self._since if self._last_tick is None else self._last_tick)

    def as_tick(self) -> dict[str, Any]:
        """The book as a ``price_tick`` message (a copy: components may keep what they get)."""
        return {"event": wire.EVENT_PRICE_TICK, "prices": dict(self._quotes)}
