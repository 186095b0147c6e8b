"""Leader and hot standby, in one process: two pricefeeds on the in-memory bus share a lease
store whose clock the test moves; only the leader ticks and alerts, the standby follows and
takes over where the leader's last tick left the sequence, the prices and the alerts."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest

from services.pricefeed import leadership, writers
from services.pricefeed.domain import (
    GbmSimulation,
    Quote,
    QuoteBoard,
    SymbolInfo,
    quote_around,
    tick_payload,
)
from services.pricefeed.follower import LeaderFollower
from services.pricefeed.loop import Clock
from services.pricefeed.metrics import PricefeedMetrics
from services.pricefeed.monitor import Breach, RiskMonitor
from services.pricefeed.providers import SimulationProvider
from services.pricefeed.service import Pricefeed
from services.pricefeed.settings import PricefeedSettings
from services.pricefeed.store import AccountRow, Snapshot
from shared import wire
from shared.bus import InMemoryBus
from shared.db.fencing import StaleEpoch
from shared.leases import LeaderLease, MemoryLeaseStore
from shared.ticks import quotes_of_tick
from tests.support import ManualProvider, StubSessions

D = Decimal
TICKERS = ["AAA", "BBB", "CCC"]
TTL = 1000.0  # lease seconds on the test's clock; renewal rounds (TTL/4 real s) never run


def quotes(price: str) -> dict[str, Quote]:
    return {t: quote_around(D(price), D(10)) for t in TICKERS}


# -- the pure parts ------------------------------------------------------------------------


def test_a_tick_names_its_publisher_and_reads_back() -> None:
    q = quotes("100")
    payload = tick_payload(7, 1.0, q, {t: D(100) for t in TICKERS}, src="feed-a", epoch=3)
    assert (payload["seq"], payload["src"], payload["epoch"]) == (7, "feed-a", 3)
    assert quotes_of_tick(payload["prices"]) == q
    assert "src" not in tick_payload(1, 1.0, q, {t: D(100) for t in TICKERS})
    bad: dict[str, Any] = {
        "AAA": {"last": "1", "bid": "2", "ask": "1"},  # crossed
        "BBB": {"last": "x", "bid": "1", "ask": "1"},
        "CCC": {"last": "-1", "bid": "1", "ask": "1"},
        "DDD": "1",
        "EEE": {"last": "1.5", "bid": "1.4"},
        "FFF": {"last": "NaN", "bid": "1", "ask": "1"},
        "OK": {"last": "1.50", "bid": "1.49", "ask": "1.51", "chg_pct": "0"},
    }
    assert quotes_of_tick(bad) == {"OK": Quote(D("1.50"), D("1.49"), D("1.51"))}
    assert quotes_of_tick(None) == {} and quotes_of_tick([]) == {}


def test_rebase_continues_the_walk_one_step_from_the_given_prices() -> None:
    sim = GbmSimulation({t: D(100) for t in TICKERS}, seed=5, day_seconds=900)
    for _ in range(50):
        sim.step(0.25)
    leader = quotes("150")
    sim.rebase({**leader, "ZZZ": quote_around(D(1), D(10))})  # unknown tickers are ignored
    moved: dict[str, Quote] = {}
    while len(moved) < len(TICKERS):
        moved.update({t: q for t, q in sim.step(0.25).items() if t not in moved})
    for ticker, quote in moved.items():  # one step of at most 4 % a day: well under 1 %
        assert abs(quote.last - D(150)) / D(150) < D("0.01"), (ticker, quote)


def test_an_alert_seen_from_the_leader_raises_the_level_never_lowers_it() -> None:
    monitor = RiskMonitor({"AAA": D(100)}, {"AAA": D("0.5")})
    monitor.load_account(1, D(1000), {"AAA": 10})  # 50 %
    monitor.note_alerted(1, "warn")
    monitor.note_alerted(99, "warn")  # unknown account: nothing
    assert monitor.level_of(1) == "warn"
    assert monitor.on_prices({"AAA": D(161)}) == []  # 80.5 %: already alerted
    monitor.note_alerted(1, "critical")
    monitor.note_alerted(1, "warn")
    assert monitor.level_of(1) == "critical"
    assert monitor.on_prices({"AAA": D(192)}) == []


def book_and_monitor(
    limit_1: str = "1000", limit_2: str = "1000"
) -> tuple[QuoteBoard, RiskMonitor]:
    book = QuoteBoard(
        SymbolInfo(i, t, D(100), D("0.5"), quote_around(D(100), D(10)))
        for i, t in enumerate(TICKERS, 1)
    )
    monitor = RiskMonitor(book.last_prices(), {t: D("0.5") for t in TICKERS})
    monitor.load_account(1, D(limit_1), {"AAA": 10})  # utilisation = AAA's price / 2 %
    monitor.load_account(2, D(limit_2), {"BBB": 10})
    return book, monitor


def follower() -> LeaderFollower:
    book, monitor = book_and_monitor()
    batch = writers.BatchWriter(None, monitor, PricefeedMetrics())  # type: ignore[arg-type]
    return LeaderFollower(book, monitor, batch, PricefeedMetrics())


def wire_tick(seq: int, epoch: int, **prices: str) -> dict[str, Any]:
    q = {t: quote_around(D(p), D(10)) for t, p in prices.items()}
    return tick_payload(seq, 1.0, q, {t: D(100) for t in q}, src="leader", epoch=epoch)


def test_a_follower_applies_the_leaders_ticks_and_keeps_what_it_did_not_alert() -> None:
    f = follower()
    f.on_tick(wire_tick(4, 2, AAA="161", BBB="162"))  # both accounts cross 80 %
    assert f.last_seq == 4 and f.book.quotes["AAA"].last == D("161.00")
    assert f.monitor.margin_used(1) == D("805.0")
    assert f.batch.pending == 2  # written on a takeover, with the margins the monitor marked
    f.on_alert(wire.risk_breach(1), {"level": "warn", "text": "", "ts": 1.0})  # alerted
    f.on_alert("risk.breach.oops", {"level": "warn"})
    f.on_alert(wire.risk_breach(2), {"level": "bogus"})
    f.on_tick(wire_tick(3, 1, AAA="300"))  # a late tick of an older leader
    assert f.last_seq == 4 and f.book.quotes["AAA"].last == D("161.00")
    [unalerted] = f.take_unalerted()  # the leader died before alerting account 2
    assert (unalerted.account_id, unalerted.level) == (2, "warn")
    assert f.take_unalerted() == []


def test_an_unalerted_breach_whose_level_is_gone_is_not_alerted_late() -> None:
    f = follower()
    f.on_tick(wire_tick(1, 1, AAA="161"))
    f.on_tick(wire_tick(2, 1, AAA="150"))  # 75 %: back below the hysteresis
    assert f.take_unalerted() == []


# -- two pricefeeds, one lease ---------------------------------------------------------


class TestClock:
    __test__ = False

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> Clock:
        async def never(_seconds: float) -> None:  # the periodic tasks run once, then wait
            await asyncio.Event().wait()

        return Clock(lambda: self.now, lambda: self.now * 1000, never)


def cold_seq(clock: TestClock, tick_ms: int = 250) -> int:
    """The ``seq`` a cold leader starts after: ticks since 1970 on its wall clock."""
    return int(clock.now * 1000 // tick_ms)


@pytest.fixture
def epochs(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The writes that got through the fence, and the leader_epochs table, in memory."""
    state: dict[str, Any] = {"epoch": {}, "alerts": [], "prices": []}

    async def claim_epoch(session: object, role: str, epoch: int, holder: str = "") -> None:
        if state["epoch"].get(role, -1) > epoch:
            raise StaleEpoch(role, epoch)
        state["epoch"][role] = epoch

    async def insert_alert(session: object, breach: Breach, ts_ms: float | None = None) -> None:
        state["alerts"].append((breach.account_id, breach.level))

    async def write_prices(session: object, q: dict[int, Quote]) -> int:
        state["prices"].append(dict(q))
        return 1

    async def write_margins(session: object, used: dict[int, Decimal]) -> int:
        return 1

    monkeypatch.setattr(leadership, "claim_epoch", claim_epoch)
    monkeypatch.setattr(writers, "insert_alert", insert_alert)
    monkeypatch.setattr(writers, "write_prices", write_prices)
    monkeypatch.setattr(writers, "write_margins", write_margins)
    yield state


def snapshot() -> Snapshot:
    return Snapshot(
        [
            SymbolInfo(i, t, D(100), D("0.5"), quote_around(D(100), D(10)))
            for i, t in enumerate(TICKERS, 1)
        ],
        # utilisation = AAA's (account 1) or BBB's (account 2) price / 2 %
        [AccountRow(1, D(1000), {"AAA": 10}), AccountRow(2, D(1000), {"BBB": 10})],
    )


def shared_world() -> tuple[InMemoryBus, TestClock, MemoryLeaseStore]:
    """What the feeds of one test share: a bus, a clock the test moves, one lease store."""
    clock = TestClock()
    return InMemoryBus(), clock, MemoryLeaseStore(TTL, clock=lambda: clock.now)


def feed(
    name: str, bus: InMemoryBus, store: MemoryLeaseStore, clock: TestClock, provider: Any
) -> Pricefeed:
    settings = PricefeedSettings(REPLICA_ID=name, seed=1)
    return Pricefeed(
        settings,
        snapshot(),
        bus=bus,
        sessions=StubSessions(),  # type: ignore[arg-type]
        metrics=PricefeedMetrics(),
        provider=provider,
        clock=clock.clock(),
        leases=store,
    )


def lease(f: Pricefeed) -> LeaderLease:
    assert f.leadership.lease is not None
    return f.leadership.lease


async def kill(f: Pricefeed) -> None:
    """What SIGKILL leaves: no more renewals, ticks, alerts or messages; the key stays."""
    await lease(f).stop(release=False)
    for sub in f._subscriptions:
        await sub.unsubscribe()
    for task in f._tasks:
        task.cancel()
    await asyncio.gather(*f._tasks, return_exceptions=True)


def ticks(bus: InMemoryBus) -> list[dict[str, Any]]:
    return [p for s, p in bus.published if s == wire.PRICES_TICKS]


def alerts(bus: InMemoryBus) -> list[tuple[int, str]]:
    return [(wire.account_of_subject(s), p["level"]) for s, p in bus.published if "breach" in s]


async def settle(done: Any = lambda: False) -> None:
    """Let the background tasks run (until ``done``, or a few loop iterations)."""
    for _ in range(50):
        await asyncio.sleep(0)
        if done():
            return


async def test_the_standby_follows_then_takes_over_where_the_leader_left(epochs) -> None:
    bus, clock, store = shared_world()
    leader_quotes = ManualProvider()
    standby_sim = GbmSimulation({t: D(100) for t in TICKERS}, seed=9)
    a = feed("feed-a", bus, store, clock, leader_quotes)
    b = feed("feed-b", bus, store, clock, SimulationProvider(standby_sim, 0.25))
    await a.start()
    await b.start()
    assert a.leadership.leading and a.leadership.epoch
    assert not b.leadership.leading and b.leadership.epoch is None

    leader_quotes.pending = {"AAA": quote_around(D(150), D(10)), "BBB": quote_around(D(150), D(10))}
    await a.loop.cycle()
    leader_quotes.pending = quotes("161")  # both accounts cross 80 %
    await a.loop.cycle()
    await settle(lambda: len(alerts(bus)) == 2)  # the leader alerts account 1 and 2
    assert alerts(bus) == [(1, "warn"), (2, "warn")]
    leader_quotes.pending = {"AAA": quote_around(D(192), D(10))}  # account 1 → critical
    for task in a._tasks:  # ... and the leader dies before it alerts that
        task.cancel()
    await asyncio.gather(*a._tasks, return_exceptions=True)
    await a.loop.cycle()
    await kill(a)
    assert [t["src"] for t in ticks(bus)] == ["feed-a"] * 3
    first = cold_seq(clock)  # the first leader started cold: its seq is the tick clock's
    assert b.book.quotes == a.book.quotes and b.follower.last_seq == first + 3
    assert b.metrics.registry.get_sample_value("pricefeed_ticks_total") == 0

    await lease(b).round()
    assert not b.leadership.leading  # the dead leader's key has not expired yet
    clock.now += TTL
    await lease(b).round()
    assert b.leadership.leading and lease(b).epoch > lease(a).epoch
    await settle(lambda: len(alerts(bus)) == 3)
    # the breach the leader computed but never alerted, once; none of those it alerted
    assert alerts(bus) == [(1, "warn"), (2, "warn"), (1, "critical")]
    assert epochs["alerts"][-1] == (1, "critical")
    assert epochs["epoch"][leadership.FENCE_ROLE] == b.leadership.epoch

    last = dict(b.book.quotes)
    while len(ticks(bus)) < 6:
        await b.loop.cycle()
    after = ticks(bus)[3:]
    assert [t["seq"] for t in after] == [first + 4, first + 5, first + 6]  # continued
    assert {t["src"] for t in after} == {"feed-b"}
    for ticker, p in after[0]["prices"].items():  # one step from the leader's last price
        assert abs(D(p["last"]) - last[ticker].last) / last[ticker].last < D("0.01")
    await b.stop()
    assert epochs["prices"], "the new leader writes the prices it followed"
    assert alerts(bus) == [(1, "warn"), (2, "warn"), (1, "critical")]


async def test_a_released_lease_is_taken_within_one_round(epochs) -> None:
    bus, clock, store = shared_world()
    a = feed("feed-a", bus, store, clock, ManualProvider())
    b = feed("feed-b", bus, store, clock, ManualProvider())
    await a.start()
    await b.start()
    a.provider.pending = quotes("120")  # type: ignore[attr-defined]
    await a.loop.cycle()
    await a.release()  # POST /ops/release
    assert not a.leadership.leading and epochs["prices"], "pending prices written first"
    await lease(b).round()
    assert b.leadership.leading
    b.provider.pending = quotes("121")  # type: ignore[attr-defined]
    await b.loop.cycle()
    first = cold_seq(clock)
    assert [(t["seq"], t["src"]) for t in ticks(bus)] == [
        (first + 1, "feed-a"),
        (first + 2, "feed-b"),
    ]
    assert a.book.quotes == b.book.quotes  # the released one follows as a standby
    await lease(a).round()
    assert not a.leadership.leading  # it no longer competes
    await a.stop()
    await b.stop()


async def test_a_deposed_leader_is_fenced_off_and_resigns(epochs) -> None:
    bus, clock, store = shared_world()
    a = feed("feed-a", bus, store, clock, ManualProvider())
    await a.start()
    old = a.leadership.epoch
    assert old is not None
    epochs["epoch"][leadership.FENCE_ROLE] = old + 10  # a newer leader has written
    a.provider.pending = quotes("120")  # type: ignore[attr-defined]
    await a.loop.cycle()
    await a.batch.flush()
    assert epochs["prices"] == [] and a.batch.pending > 0  # refused, kept
    assert not a.leadership.leading
    assert a.metrics.registry.get_sample_value("pricefeed_fenced_writes_total", {"kind": "batch"})
    await settle(lambda: lease(a).epoch not in (0, old))  # resigned: given back, taken anew
    assert lease(a).epoch > old
    await a.stop()


async def test_a_restarted_replica_does_not_take_over_from_the_warm_standby(epochs) -> None:
    """SIGKILL the leader and restart it at once (what a supervisor does): the restarted
    process has seen no tick, so it lets the warm standby lead; the seq never goes back."""
    bus, clock, store = shared_world()
    a = feed("feed-a", bus, store, clock, ManualProvider())
    b = feed("feed-b", bus, store, clock, ManualProvider())
    await a.start()
    await b.start()
    for price in ("120", "121"):
        a.provider.pending = quotes(price)  # type: ignore[attr-defined]
        await a.loop.cycle()
    await settle(lambda: b.follower.last_seq == a.loop.seq)
    await kill(a)
    restarted = feed("feed-a2", bus, store, clock, ManualProvider())
    await restarted.start()  # the dead leader's key is still there
    assert not restarted.leadership.leading
    clock.now += TTL  # the key expires
    await lease(restarted).round()  # free, but it is cold: it waits
    await lease(b).round()
    assert b.leadership.leading and not restarted.leadership.leading
    for _ in range(leadership.COLD_ROUNDS + 1):
        clock.now += lease(restarted).renew_every
        await lease(b).round()
        await lease(restarted).round()
    assert b.leadership.leading and not restarted.leadership.leading
    b.provider.pending = quotes("122")  # type: ignore[attr-defined]
    await b.loop.cycle()
    seqs = [t["seq"] for t in ticks(bus)]
    assert seqs == [seqs[0], seqs[0] + 1, seqs[0] + 2] and ticks(bus)[-1]["src"] == "feed-b"
    await settle(lambda: restarted.follower.last_seq == seqs[-1])  # now it is warm
    await b.stop()
    await restarted.stop()


async def test_the_leader_does_not_take_its_own_alerts_back_from_the_bus(epochs) -> None:
    """NATS echoes the leader's alerts back to it. One that arrives after the account's
    level cleared must not raise it again: the next crossing would not be alerted."""
    bus, clock, store = shared_world()
    prices = ManualProvider()
    a = feed("feed-a", bus, store, clock, prices)
    await a.start()
    assert a.leadership.leading
    for price in ("150", "161", "140"):  # 75 %, 80.5 % (warned), 70 % (cleared)
        prices.pending = quotes(price)
        await a.loop.cycle()
    await settle(lambda: len(alerts(bus)) >= 1)
    assert a.monitor.level_of(1) is None
    await a._on_alert(wire.risk_breach(1), {"level": "warn", "text": "", "ts": 1.0})  # late
    for price in ("158", "170"):  # 79 %, then 85 %: a new crossing
        prices.pending = quotes(price)
        await a.loop.cycle()
    await settle(lambda: len(alerts(bus)) >= 2)
    await a.stop()
    assert [alert for alert in alerts(bus) if alert[0] == 1] == [(1, "warn"), (1, "warn")]
