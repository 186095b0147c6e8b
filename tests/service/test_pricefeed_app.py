"""The pricefeed process against a real nats-server and PostgreSQL with the demo data."""

from __future__ import annotations

from dataclasses import replace
from decimal import ROUND_DOWN, Decimal
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pricefeed.app import create_app
from services.pricefeed.domain import Quote, quote_around
from services.pricefeed.settings import PricefeedSettings
from shared import wire
from shared.bus import NatsBus
from shared.db.models import Account, Position, RiskAlert, Symbol, User
from shared.db.queries import held_positions
from shared.domain import Holding, margin_used, utilisation_pct
from tests.support import ManualProvider, collect, running, wait_until

pytestmark = pytest.mark.service
D = Decimal


@pytest.fixture
def settings(service_env: None) -> PricefeedSettings:
    return PricefeedSettings(
        tick_interval_ms=50, db_write_interval_s=0.1, margin_write_interval_s=0.1, seed=7
    )


async def test_simulated_ticks_reach_nats_and_the_database(
    settings: PricefeedSettings, db: async_sessionmaker[AsyncSession], bus: NatsBus
) -> None:
    ticks = await collect(bus, wire.PRICES_TICKS)
    async with db() as s:
        symbols = len((await s.scalars(select(Symbol))).all())
    async with running(create_app(settings)) as client:
        await wait_until(lambda: len(ticks) >= 10)
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        metrics = (await client.get("/metrics")).text
        assert "pricefeed_cycle_seconds_bucket" in metrics
        assert "pricefeed_symbols_per_tick_count" in metrics
    seqs = [p["seq"] for _, p in ticks]
    # the first leader starts at the tick clock, then counts up by one per tick
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) and seqs[0] > 1
    assert all(0 < len(p["prices"]) < symbols for _, p in ticks)
    latest: dict[str, dict[str, str]] = {}
    for _, payload in ticks:
        latest.update(payload["prices"])
        assert set(next(iter(payload["prices"].values()))) == {"last", "bid", "ask", "chg_pct"}
    async with db() as s:  # the last batch is written on shutdown
        stored = {sym.ticker: sym for sym in await s.scalars(select(Symbol))}
    for ticker, p in latest.items():
        assert (stored[ticker].last, stored[ticker].bid, stored[ticker].ask) == (
            D(p["last"]),
            D(p["bid"]),
            D(p["ask"]),
        )


async def _account(
    sessions: async_sessionmaker[AsyncSession], username: str
) -> tuple[int, dict[str, Holding]]:
    """The account of ``username`` and its open positions at the symbols' stored prices."""
    async with sessions() as s:
        account_id = await s.scalar(
            select(Account.id)
            .join(User, User.id == Account.user_id)
            .where(User.username == username)
        )
        assert account_id is not None, username
        columns = (Symbol.ticker, Position.quantity, Symbol.last, Symbol.margin_rate)
        rows = (await s.execute(held_positions(*columns, account_id=account_id))).all()
    return account_id, {
        ticker: Holding(ticker, qty, last, margin_rate=rate) for ticker, qty, last, rate in rows
    }


def _scaled(holdings: dict[str, Holding], factor: str) -> dict[str, Quote]:
    return {t: quote_around(h.last * D(factor), D(10)) for t, h in holdings.items()}


async def test_breaches_alerts_margin_and_order_events(
    settings: PricefeedSettings, db: async_sessionmaker[AsyncSession], bus: NatsBus
) -> None:
    breaches = await collect(bus, wire.RISK_BREACH_ALL)
    alice, holdings = await _account(db, "alice")
    bob, _ = await _account(db, "bob")
    async with db() as s:
        limit = await s.scalar(select(Account.margin_limit).where(Account.id == alice))
        bob_used = await s.scalar(select(Account.margin_used).where(Account.id == bob))
    assert limit is not None

    async def alerts() -> list[RiskAlert]:
        async with db() as s:
            return list(await s.scalars(select(RiskAlert).order_by(RiskAlert.id)))

    async def stored_margin(account_id: int) -> Decimal:
        async with db() as s:
            used = await s.scalar(select(Account.margin_used).where(Account.id == account_id))
            assert used is not None
            return used

    ticks = await collect(bus, wire.PRICES_TICKS)
    provider = ManualProvider()
    app = create_app(settings, provider=provider)
    async with running(app):
        # Alice starts at 78 %: nothing fires. The alerts leave in the order they were
        # raised (one queue), so a breach at start would come before the one below.
        await wait_until(lambda: app.state.pricefeed.leadership.leading)
        provider.pending = quotes = _scaled(holdings, "1.05")  # ≈ 81.9 %
        await wait_until(lambda: breaches)
        assert len(breaches) == 1
        subject, payload = breaches[0]
        assert subject == wire.risk_breach(alice)
        assert payload["level"] == "warn" and 80 < float(payload["utilisation_pct"]) < 85
        assert isinstance(payload["ts"], float) and payload["text"]
        expected = margin_used(replace(h, last=quotes[t].last) for t, h in holdings.items())
        assert D(payload["utilisation_pct"]) == utilisation_pct(expected, limit).quantize(
            D("0.01"), ROUND_DOWN
        )
        await wait_until(lambda: _equal_async(stored_margin(alice), expected.quantize(D("0.01"))))
        [alert] = await wait_until(alerts)
        assert (alert.account_id, alert.level) == (alice, "warn")

        # still warn: no repeat. A breach is queued in the cycle that publishes the tick (the
        # first one after these quotes are set), so once that tick is seen a repeat would be
        # queued before the critical one below.
        seen = len(ticks)
        provider.pending = _scaled(holdings, "1.06")
        await wait_until(lambda: len(ticks) > seen)

        # The orders service fills a big buy and announces it after commit.
        async with db.begin() as s:
            await s.execute(
                update(Position)
                .where(Position.account_id == alice)
                .values(quantity=Position.quantity * 2)
            )
        await bus.publish(wire.orders_events(alice), {"order_id": 1, "status": "filled"})
        await wait_until(lambda: len(breaches) == 2)
        assert breaches[1][1]["level"] == "critical"
        await wait_until(lambda: _len_async(alerts(), 2))
        assert await stored_margin(bob) == bob_used

    # A restart finds alice at critical with a stored critical alert: nothing fires again.
    # Bob's breach, raised by the restarted leader's first tick, comes after anything it
    # would have alerted at start (one queue).
    provider = ManualProvider()
    app = create_app(settings, provider=provider)
    async with running(app) as client:
        await wait_until(lambda: app.state.pricefeed.leadership.leading)
        assert (await client.get("/readyz")).status_code == 200
        async with db() as s:
            bob_limit = await s.scalar(select(Account.margin_limit).where(Account.id == bob))
        _, bob_holdings = await _account(db, "bob")
        bob_margin = margin_used(bob_holdings.values())
        assert bob_limit and bob_margin  # scaled to ≈ 90 %: a warning for bob
        provider.pending = _scaled(bob_holdings, str(bob_limit * D("0.9") / bob_margin))
        await wait_until(lambda: len(breaches) >= 3)
    assert [(subject, p["level"]) for subject, p in breaches[2:]] == [
        (wire.risk_breach(bob), "warn")
    ]
    assert [a.level for a in await alerts()] == ["warn", "critical", "warn"]


async def test_a_stored_alert_that_has_cleared_since_does_not_hold_back_the_next(
    settings: PricefeedSettings, db: async_sessionmaker[AsyncSession], bus: NatsBus
) -> None:
    """Alice was warned, then fell below the warning level (a level that clears is not
    stored) and is at 79 % when the pricefeed starts: within the stored warning's band. At
    85 % she is warned again, not left at a level she had left."""
    breaches = await collect(bus, wire.RISK_BREACH_ALL)
    alice, holdings = await _account(db, "alice")
    used = margin_used(holdings.values())
    async with db.begin() as s:
        await s.execute(
            update(Account).where(Account.id == alice).values(margin_limit=used / D("0.79"))
        )
        text = "Margin utilisation 81.00% crossed the warning level (80%)"
        s.add(RiskAlert(account_id=alice, level="warn", text=text, utilisation_pct=D(81)))
    provider = ManualProvider()
    app = create_app(settings, provider=provider)
    async with running(app):
        await wait_until(lambda: app.state.pricefeed.leadership.leading)
        assert app.state.pricefeed.monitor.level_of(alice) is None
        provider.pending = _scaled(holdings, str(D("0.85") / D("0.79")))
        await wait_until(lambda: breaches)
    assert [(subject, p["level"]) for subject, p in breaches] == [(wire.risk_breach(alice), "warn")]


async def _equal_async(value: Any, expected: Any) -> bool:
    return bool(await value == expected)


async def _len_async(value: Any, expected: int) -> bool:
    return len(await value) == expected
