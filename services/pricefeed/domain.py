"""Market data, pure: quotes, the seeded GBM simulation, the quote board, the tick payload.

No I/O here. The risk monitor, also pure, lives in :mod:`services.pricefeed.monitor`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_FLOOR, ROUND_HALF_UP, Decimal

from shared.domain import Quote, change_pct

__all__ = [
    "PRICE_STEP",
    "GbmSimulation",
    "Quote",
    "QuoteBoard",
    "SymbolInfo",
    "quote_around",
    "tick_payload",
]

PRICE_STEP = Decimal("0.01")  # US equities quote in cents; the page shows exact figures
PCT_STEP = Decimal("0.01")
_BPS = Decimal(10_000)


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """What the pricefeed keeps about one symbol from the database."""

    id: int
    ticker: str
    prev_close: Decimal
    margin_rate: Decimal
    quote: Quote


def quote_around(last: Decimal, spread_bps: Decimal) -> Quote:
    """A quote with ``spread_bps`` between bid and ask around ``last``, on the cent grid."""
    last = max(last.quantize(PRICE_STEP, ROUND_HALF_UP), PRICE_STEP)
    half = last * spread_bps / _BPS / 2
    bid = max((last - half).quantize(PRICE_STEP, ROUND_FLOOR), PRICE_STEP)
    ask = max((last + half).quantize(PRICE_STEP, ROUND_CEILING), bid)
    return Quote(last, bid, ask)


class _SimSymbol:
    __slots__ = ("activity", "price", "since", "spread_bps", "vol")

    def __init__(self, price: float, vol: float, spread_bps: Decimal, activity: float) -> None:
        self.price, self.vol, self.spread_bps, self.activity = price, vol, spread_bps, activity
        self.since = 0.0


class GbmSimulation:
    """Geometric Brownian motion per symbol, reproducible from ``seed``.

    Each symbol gets its own daily volatility (1–4 %), bid/ask spread (2–15 bp) and activity
    (the chance it trades in a cycle, 5–50 %). A symbol that trades moves by the GBM step for
    the simulated time since it last traded, so quiet symbols are not less volatile. Time is
    simulated (the caller's ``dt``), never read from a clock, so a seed replays exactly.
    """

    def __init__(
        self, start: Mapping[str, Decimal], *, seed: int, day_seconds: float = 900.0
    ) -> None:
        self._rng = random.Random(seed)
        self._day_seconds = day_seconds
        self._now = 0.0
        self._symbols: dict[str, _SimSymbol] = {}
        for ticker in sorted(start):
            self._symbols[ticker] = _SimSymbol(
                price=float(start[ticker]),
                vol=self._rng.uniform(0.01, 0.04),
                spread_bps=Decimal(self._rng.randint(2, 15)),
                activity=self._rng.uniform(0.05, 0.5),
            )
        self._last: dict[str, Quote] = {
            t: quote_around(start[t], s.spread_bps) for t, s in self._symbols.items()
        }

    @property
    def tickers(self) -> list[str]:
        return list(self._symbols)

    def volatility(self, ticker: str) -> float:
        return self._symbols[ticker].vol

    def rebase(self, quotes: Mapping[str, Quote]) -> None:
        """Continue the walk from ``quotes`` (a standby taking over from the leader's last
        published prices): the next step moves each symbol by one step from there."""
        for ticker, quote in quotes.items():
            s = self._symbols.get(ticker)
            if s is None:
                continue
            s.price, s.since = float(quote.last), self._now
            self._last[ticker] = quote

    def step(self, dt_s: float) -> dict[str, Quote]:
        """Advance ``dt_s`` simulated seconds; the quotes of the symbols that changed."""
        self._now += dt_s
        rng, changed = self._rng, {}
        for ticker, s in self._symbols.items():
            if rng.random() >= s.activity:
                continue
            dt = (self._now - s.since) / self._day_seconds
            s.since = self._now
            s.price *= math.exp(-0.5 * s.vol * s.vol * dt + s.vol * math.sqrt(dt) * rng.gauss())
            quote = quote_around(Decimal(s.price), s.spread_bps)
            if quote != self._last[ticker]:
                self._last[ticker] = changed[ticker] = quote
        return changed


class QuoteBoard:
    """The feed's current quote of every known symbol, and whether it has gone stale (the
    services' :class:`shared.components.PriceBook` is what they have seen of the feed)."""

    def __init__(self, symbols: Iterable[SymbolInfo]) -> None:
        self.symbols: dict[str, SymbolInfo] = {s.ticker: s for s in symbols}
        self.quotes: dict[str, Quote] = {t: s.quote for t, s in self.symbols.items()}
        self.stale = False

    def last_prices(self) -> dict[str, Decimal]:
        return {t: q.last for t, q in self.quotes.items()}

    def apply(self, quotes: Mapping[str, Quote]) -> dict[str, Quote]:
        """Take fresh quotes (unknown tickers are ignored); return only those that changed."""
        self.stale = False
        changed: dict[str, Quote] = {}
        for ticker, quote in quotes.items():
            old = self.quotes.get(ticker)
            if old is not None and old != quote:
                self.quotes[ticker] = changed[ticker] = quote
        return changed

    def mark_stale(self) -> bool:
        """Keep the last prices, flag them stale; True when this starts a stale period."""
        started, self.stale = not self.stale, True
        return started


def _p4(value: Decimal) -> str:
    return str(value.quantize(PRICE_STEP, ROUND_HALF_UP))


def tick_payload(
    seq: int,
    ts_ms: float,
    changed: Mapping[str, Quote],
    prev_close: Mapping[str, Decimal],
    *,
    src: str | None = None,
    epoch: int | None = None,
) -> dict[str, object]:
    """The ``prices.ticks`` message (DESIGN.md §3.2); prices as decimal strings. ``src``
    names the publishing replica and ``epoch`` its leader lease's epoch."""
    prices = {
        ticker: {
            "last": _p4(q.last),
            "bid": _p4(q.bid),
            "ask": _p4(q.ask),
            "chg_pct": str(
                change_pct(q.last, prev_close[ticker]).quantize(PCT_STEP, ROUND_HALF_UP)
            ),
        }
        for ticker, q in changed.items()
    }
    payload: dict[str, object] = {"seq": seq, "ts": ts_ms, "prices": prices}
    if src is not None:
        payload["src"] = src
    if epoch is not None:
        payload["epoch"] = epoch
    return payload
