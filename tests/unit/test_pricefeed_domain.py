"""Pricefeed market data, pure: the seeded simulation, the price book, the tick payload."""

from __future__ import annotations

import math
import statistics
from decimal import Decimal

from services.pricefeed.domain import (
    GbmSimulation,
    Quote,
    QuoteBoard,
    SymbolInfo,
    quote_around,
    tick_payload,
)

START = {f"S{i:03d}": Decimal(20 + i) for i in range(200)}


def run(seed: int, cycles: int = 50) -> list[dict[str, Quote]]:
    sim = GbmSimulation(START, seed=seed)
    return [sim.step(0.25) for _ in range(cycles)]


def test_same_seed_replays_exactly() -> None:
    assert run(42) == run(42)


def test_different_seeds_differ() -> None:
    assert run(1) != run(2)


def test_only_some_symbols_change_each_cycle() -> None:
    counts = [len(changed) for changed in run(7)]
    assert all(0 < n < len(START) for n in counts)
    assert 0.1 < statistics.mean(counts) / len(START) < 0.5


def test_each_symbol_has_its_own_volatility() -> None:
    sim = GbmSimulation(START, seed=3)
    vols = {sim.volatility(t) for t in START}
    assert len(vols) == len(START)
    assert all(0.01 <= v <= 0.04 for v in vols)


def test_quotes_are_well_formed() -> None:
    for changed in run(11, cycles=200):
        for quote in changed.values():
            assert Decimal(0) < quote.bid < quote.ask
            assert quote.bid <= quote.last <= quote.ask
            assert quote.last == quote.last.quantize(Decimal("0.01"))


def test_log_returns_scale_with_each_symbols_volatility() -> None:
    start = {f"S{i:03d}": Decimal(1000) for i in range(400)}
    sim = GbmSimulation(start, seed=9, day_seconds=1.0)
    latest = {t: Decimal(1000) for t in start}
    for _ in range(400):
        latest.update({t: q.last for t, q in sim.step(0.25).items()})
    days = 100.0
    z = [math.log(latest[t] / 1000) / (sim.volatility(t) * math.sqrt(days)) for t in start]
    assert abs(statistics.mean(z)) < 0.2
    assert 0.85 < statistics.stdev(z) < 1.15


def test_quote_around_keeps_the_spread_on_the_price_grid() -> None:
    q = quote_around(Decimal("100"), Decimal(10))
    assert (q.last, q.bid, q.ask) == (Decimal("100.0000"), Decimal("99.9500"), Decimal("100.0500"))
    tiny = quote_around(Decimal("0.00001"), Decimal(10))
    assert tiny.bid > 0 and tiny.bid <= tiny.ask


def book() -> QuoteBoard:
    return QuoteBoard(
        [
            SymbolInfo(
                1, "AAA", Decimal(100), Decimal("0.5"), quote_around(Decimal(100), Decimal(10))
            ),
            SymbolInfo(
                2, "BBB", Decimal(50), Decimal("0.25"), quote_around(Decimal(50), Decimal(10))
            ),
        ]
    )


def test_book_returns_only_changed_known_quotes() -> None:
    b = book()
    same = b.quotes["AAA"]
    new = quote_around(Decimal(51), Decimal(10))
    changed = b.apply({"AAA": same, "BBB": new, "ZZZ": new})
    assert changed == {"BBB": new}
    assert b.quotes["BBB"] == new and "ZZZ" not in b.quotes


def test_book_stale_marks_once_and_clears_on_fresh_quotes() -> None:
    b = book()
    before = dict(b.quotes)
    assert b.mark_stale() is True
    assert b.mark_stale() is False
    assert b.stale and b.quotes == before
    b.apply({})
    assert not b.stale


def test_tick_payload_formats_decimals_as_strings() -> None:
    q = Quote(Decimal("101.23456"), Decimal("101.2"), Decimal("101.3"))
    payload = tick_payload(7, 1700000000123.5, {"AAA": q}, {"AAA": Decimal(100)})
    assert payload == {
        "seq": 7,
        "ts": 1700000000123.5,
        "prices": {"AAA": {"last": "101.23", "bid": "101.20", "ask": "101.30", "chg_pct": "1.23"}},
    }
