"""The market data cycle over the in-memory bus, and the drift-free scheduler."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal

import pytest

from services.pricefeed.domain import (
    GbmSimulation,
    Quote,
    QuoteBoard,
    SymbolInfo,
    quote_around,
)
from services.pricefeed.loop import Clock, PriceLoop, run_periodic
from services.pricefeed.metrics import PricefeedMetrics
from services.pricefeed.monitor import Breach, RiskMonitor
from services.pricefeed.providers import ProviderError, SimulationProvider
from shared import wire
from shared.bus import InMemoryBus

D = Decimal
TICKERS = [f"T{i:02d}" for i in range(40)]


def make_book() -> QuoteBoard:
    return QuoteBoard(
        SymbolInfo(i, t, D(100), D("0.5"), quote_around(D(100), D(10)))
        for i, t in enumerate(TICKERS, 1)
    )


class ScriptedProvider:
    name = "scripted"

    def __init__(self, answers: list[Mapping[str, Quote] | Exception]) -> None:
        self.answers = answers

    async def fetch(self) -> Mapping[str, Quote]:
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    async def aclose(self) -> None:
        pass


def make_loop(provider, book: QuoteBoard | None = None):
    book = book or make_book()
    monitor = RiskMonitor(book.last_prices(), {t: D("0.5") for t in TICKERS})
    bus = InMemoryBus()
    metrics = PricefeedMetrics()
    written: dict[int, Quote] = {}
    breaches: list[Breach] = []
    loop = PriceLoop(
        provider=provider,
        book=book,
        monitor=monitor,
        bus=bus,
        metrics=metrics,
        on_changed=written.update,
        on_breach=lambda b, ts: breaches.append(b),
    )
    return loop, bus, metrics, written, breaches


def sample(metrics: PricefeedMetrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def test_ticks_carry_only_changed_symbols_and_increasing_seq() -> None:
    book = make_book()
    sim = GbmSimulation(book.last_prices(), seed=1)
    loop, bus, metrics, written, _ = make_loop(SimulationProvider(sim, 0.25), book)
    before = dict(book.quotes)
    for _ in range(20):
        await loop.cycle()
    ticks = [p for s, p in bus.published if s == wire.PRICES_TICKS]
    assert [t["seq"] for t in ticks] == list(range(1, len(ticks) + 1))
    assert len(ticks) == 20
    assert all(0 < len(t["prices"]) < len(TICKERS) for t in ticks)
    shown = dict(before)
    for tick in ticks:
        for ticker, p in tick["prices"].items():
            new = Quote(D(p["last"]), D(p["bid"]), D(p["ask"]))
            assert new != shown[ticker], "a tick carried an unchanged symbol"
            shown[ticker] = new
            assert p["chg_pct"] == str(
                ((new.last - 100) / 100 * 100).quantize(D("0.01"), ROUND_HALF_UP)
            )
    assert shown == book.quotes
    assert {book.symbols[t].id for t in book.quotes if book.quotes[t] != before[t]} == set(written)
    assert sample(metrics, "pricefeed_ticks_total") == 20


async def test_a_cycle_without_changes_publishes_nothing() -> None:
    loop, bus, *_ = make_loop(ScriptedProvider([{}, {"T01": make_book().quotes["T01"]}]))
    assert (await loop.cycle()).seq is None
    assert (await loop.cycle()).seq is None
    assert bus.published == []


async def test_provider_failure_keeps_last_prices_and_marks_stale() -> None:
    moved = quote_around(D(101), D(10))
    provider = ScriptedProvider(
        [ProviderError("scripted", "down"), RuntimeError("boom"), {"T01": moved}]
    )
    loop, bus, metrics, *_ = make_loop(provider)
    before = dict(loop.book.quotes)
    for _ in range(2):
        result = await loop.cycle()
        assert result.stale and loop.book.stale
        assert loop.book.quotes == before
    assert bus.published == []
    assert sample(metrics, "pricefeed_prices_stale") == 1
    assert sample(metrics, "pricefeed_provider_failures_total", provider="scripted") == 2
    result = await loop.cycle()
    assert not result.stale and result.seq == 1 and not loop.book.stale
    assert sample(metrics, "pricefeed_prices_stale") == 0
    assert list(bus.published[0][1]["prices"]) == ["T01"]


async def test_a_breach_is_reported_once_by_the_cycle() -> None:
    book = make_book()
    quotes = [{"T01": quote_around(D(p), D(10))} for p in ("161", "162", "163")]
    loop, _, _, _, breaches = make_loop(ScriptedProvider(list(quotes)), book)
    loop.monitor.load_account(9, D(1000), {"T01": 10})  # 10 × 100 × 0.5 / 1000 = 50 %
    for _ in quotes:
        await loop.cycle()
    assert [(b.account_id, b.level) for b in breaches] == [(9, "warn")]


class FakeClock:
    """Monotonic time that only moves when the scheduled step works or the scheduler sleeps."""

    def __init__(self, durations: list[float]) -> None:
        self.now, self.durations = 1000.0, durations
        self.starts: list[float] = []

    async def step(self) -> None:
        self.starts.append(self.now)
        self.now += self.durations[len(self.starts) - 1]
        if len(self.starts) == 3:
            raise RuntimeError("a failing step does not stop the schedule")

    async def sleep(self, seconds: float) -> None:
        assert seconds >= 0
        self.now += seconds
        if len(self.starts) == len(self.durations):
            raise _Stop

    def clock(self) -> Clock:
        return Clock(lambda: self.now, lambda: self.now * 1000, self.sleep)


class _Stop(Exception):
    pass


async def test_scheduler_keeps_the_grid_and_skips_slots_after_a_slow_cycle() -> None:
    durations = [0.01, 0.2, 0.05, 0.6, 0.01] + [0.1] * 100
    fake = FakeClock(durations)
    overruns: list[tuple[float, int]] = []
    with pytest.raises(_Stop):
        await run_periodic(
            0.25, fake.step, clock=fake.clock(), on_overrun=lambda t, n: overruns.append((t, n))
        )
    offsets = [round((s - 1000.0) / 0.25, 9) for s in fake.starts]
    # The 0.6 s cycle (slot 3) overran slots 4 and 5; the next cycle starts on slot 6.
    assert offsets[:6] == [0, 1, 2, 3, 6, 7]
    assert all(o == int(o) for o in offsets), "cycles drifted off the grid"
    assert offsets[-1] == len(durations) + 1
    assert overruns == [(pytest.approx(0.6), 2)]


class BrokenBus(InMemoryBus):
    async def publish(self, subject: str, payload: dict[str, object]) -> None:
        raise ConnectionError("nats down")


async def test_a_failed_publish_still_advances_book_monitor_and_writes() -> None:
    moved = quote_around(D(161), D(10))
    loop, _, metrics, written, breaches = make_loop(ScriptedProvider([{"T01": moved}]))
    loop.bus = BrokenBus()
    loop.monitor.load_account(9, D(1000), {"T01": 10})
    result = await loop.cycle()
    assert result.seq == 1 and loop.book.quotes["T01"] == moved
    assert list(written) == [loop.book.symbols["T01"].id]
    assert [b.level for b in breaches] == ["warn"]
    assert sample(metrics, "pricefeed_tick_publish_failures_total") == 1
