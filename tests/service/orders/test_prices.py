"""The orders service against real PostgreSQL and NATS, the prices it trades at: the
latest tick's, not the table's; none while the feed is silent or its quote is not valid."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.orders.settings import OrdersSettings
from shared import wire
from shared.bus import NatsBus
from shared.identity import Identity
from tests.service.orders.support import (
    CENT,
    Process,
    book,
    last_order,
    place,
    started,
    submit,
    symbol,
    tick,
)
from tests.support import ManualClock, collect, wait_until

pytestmark = pytest.mark.service


async def test_an_invalid_quote_in_the_feed_refuses_the_order_and_writes_nothing(
    process: Process, db: async_sessionmaker[AsyncSession], alice: Identity, bus: NatsBus
) -> None:
    prices = process.app.state.prices
    await bus.publish(wire.PRICES_TICKS, tick(1, KO=("60.00", "0.00")))  # an ask of 0
    await wait_until(lambda: (prices.quote("KO") or {}).get("ask") == "0.00")
    before = await book(db, alice.account_id, "KO")
    r = await submit(process.client, alice, symbol="KO", side="buy", quantity=1)
    assert r.status_code == 422 and "No valid price for KO right now" in r.text
    after = await book(db, alice.account_id, "KO")
    assert (after["cash"], after["position"], after["fills"], len(after["orders"])) == (
        before["cash"],
        before["position"],
        before["fills"],
        len(before["orders"]),
    )


async def test_market_orders_fill_at_the_latest_tick_not_the_lagging_table(
    process: Process, db: async_sessionmaker[AsyncSession], alice: Identity, bus: NatsBus
) -> None:
    aapl = await symbol(db, "AAPL")
    live_ask = (aapl.ask + Decimal("3.21")).quantize(CENT)
    prices = process.app.state.prices
    await bus.publish(wire.PRICES_TICKS, tick(1, AAPL=(live_ask - CENT, live_ask)))
    await wait_until(lambda: (prices.quote("AAPL") or {}).get("ask") == str(live_ask))
    events = await collect(bus, wire.orders_events(alice.account_id))
    await place(process.client, alice, symbol="AAPL", side="buy", quantity=2)
    order = await last_order(db, alice.account_id)
    assert order.status == "filled" and order.avg_fill_price == live_ask
    await wait_until(lambda: events)
    assert events[0][1]["price"] == str(live_ask)  # as traded, as a venue fill publishes it
    assert (await symbol(db, "AAPL")).ask == aapl.ask  # the table is not the orders' to write


async def test_market_orders_are_refused_while_the_feed_is_silent(
    settings: OrdersSettings, db: async_sessionmaker[AsyncSession], alice: Identity, bus: NatsBus
) -> None:
    settings.max_feed_silence_s = 0.3
    async with started(settings) as orders:
        client, prices = orders.client, orders.app.state.prices
        clock = prices._clock = ManualClock()  # the feed's silence on the test's clock
        await bus.publish(wire.PRICES_TICKS, tick(1, KO=("60.00", "60.02")))
        await wait_until(lambda: prices.seen_feed and prices.silent_for() == 0)  # tick 1, now
        clock.now += 0.6  # the feed went quiet
        before = await book(db, alice.account_id, "KO")
        r = await submit(client, alice, symbol="KO", side="buy", quantity=1)
        assert r.status_code == 422
        assert "Market data is delayed" in r.text
        assert await book(db, alice.account_id, "KO") == before
        await bus.publish(wire.PRICES_TICKS, tick(2, KO=("60.00", "60.02")))
        await wait_until(lambda: prices.silent_for() == 0)
        assert (await submit(client, alice, symbol="KO", side="buy", quantity=1)).status_code == 200
