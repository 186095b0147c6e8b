"""The orders service against real PostgreSQL and NATS, execution: immediate fills, the
venue's limit fills (exactly once, across processes), cancel."""

from __future__ import annotations

import asyncio
from datetime import UTC
from decimal import Decimal
from typing import Any
from uuid import uuid4

import httpx
import pytest
from sqlalchemy import event, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.orders import components, queries
from services.orders.settings import OrdersSettings
from shared import domain, wire
from shared.bus import NatsBus
from shared.db.models import Order, Position
from shared.identity import Identity
from tests.service.orders.support import (
    CENT,
    Process,
    book,
    last_order,
    place,
    place_limit,
    submit,
    symbol,
    tick,
    two_processes,
    under_ask,
)
from tests.support import (
    collect,
    collect_ui,
    identity_headers,
    session_payload,
    wait_until,
)

pytestmark = pytest.mark.service


async def cancel(client: httpx.AsyncClient, who: Identity, order_id: int) -> httpx.Response:
    return await client.post(
        "/components/order/events/cancel",
        json={"order_id": order_id},
        headers=identity_headers(who),
    )


# -- market orders ------------------------------------------------------------------------


async def test_market_buy_fills_at_ask_and_publishes_after_commit(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], alice: Identity, bus: NatsBus
) -> None:
    aapl = await symbol(db, "AAPL")
    before = await book(db, alice.account_id, "AAPL")
    seen_in_db: list[str] = []
    events: list[dict[str, Any]] = []

    async def on_event(_subject: str, payload: dict[str, Any]) -> None:
        async with db() as s:  # published after commit: the fill is already visible
            seen_in_db.append(
                str(await s.scalar(select(Order.status).where(Order.id == payload["order_id"])))
            )
        events.append(payload)

    await bus.subscribe(wire.orders_events(alice.account_id), on_event)
    await bus.flush()

    cid = uuid4().hex
    r = await place(client, alice, symbol="aapl", side="buy", quantity=10, client_order_id=cid)
    order = await last_order(db, alice.account_id)
    assert f"Order #{order.id} filled: bought 10 AAPL @ {aapl.ask:,.2f}" in r.text
    assert 'data-status="submitted"' in r.text
    assert f'value="{cid}"' not in r.text  # the next form carries a fresh client order id

    after = await book(db, alice.account_id, "AAPL")
    assert (order.status, order.filled_qty, order.avg_fill_price) == ("filled", 10, aapl.ask)
    assert order.client_order_id == cid and order.reject_reason is None
    assert after["fills"] == before["fills"] + 1
    old_qty, old_avg, old_realised = before["position"]
    trade = domain.apply_fill(old_qty, old_avg, "buy", 10, aapl.ask)
    assert after["position"] == (trade.qty, trade.avg_cost, old_realised)
    assert after["cash"] == before["cash"] - aapl.ask * 10

    await wait_until(lambda: events)
    assert seen_in_db == ["filled"]
    event = events[0]
    assert {k: event[k] for k in ("order_id", "status", "symbol", "side", "qty", "price")} == {
        "order_id": order.id,
        "status": "filled",
        "symbol": "AAPL",
        "side": "buy",
        "qty": 10,
        "price": str(aapl.ask),
    }
    assert isinstance(event["ts"], float)


async def test_a_market_buy_writes_its_order_once_in_few_reads(
    process: Process,
    db: async_sessionmaker[AsyncSession],
    alice: Identity,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = process.app.state.db.kw["bind"].sync_engine
    statements: list[str] = []
    lists_read: list[int] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split()).lower())

    async def order_rows(*args: Any) -> Any:
        lists_read.append(1)
        return await queries.order_rows(*args)

    monkeypatch.setattr(components, "order_rows", order_rows)
    event.listen(engine, "before_cursor_execute", seen)
    try:
        r = await place(process.client, alice, symbol="AAPL", side="buy", quantity=1)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert "filled: bought 1 AAPL" in r.text
    order = await last_order(db, alice.account_id)
    assert (order.status, order.filled_qty) == ("filled", 1)
    # inserted filled and booked in one statement: the order, its fill, the position, the
    # cash and the order's event (no second write of the row, no write of its own for each)
    writes = [s for s in statements if not s.startswith("select")]
    assert len(writes) == 1 and writes[0].startswith("with placed as (insert into orders")
    for table in ("fills", "positions", "outbox"):
        assert f"insert into {table}" in writes[0]
    assert "update accounts set cash" in writes[0]
    assert not [s for s in statements if "update orders" in s]
    # one read for the position and margin
    assert len([s for s in statements if s.startswith("select") and "from positions" in s]) == 1
    # an order placed with this form's id is looked for in the account's locking read
    reads_of_orders = [s for s in statements if s.startswith("select") and " orders" in s]
    assert len(reads_of_orders) == 1 and "for update of accounts" in reads_of_orders[0]
    assert lists_read == [1]  # after the order, for the live instance (not in the mount)


async def test_the_history_lists_an_order_as_placed(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], alice: Identity
) -> None:
    """A row of the order history: the order's figures, and when it was placed in UTC to
    the second (formatted by the database)."""
    await place(client, alice, symbol="KO", side="buy", quantity=2)
    order = await last_order(db, alice.account_id)
    async with db() as s:
        _open, recent = await queries.order_rows(s, alice.account_id, 50, 50)
    row = recent[0]
    assert (row["id"], row["status"], row["side"], row["qty"], row["symbol"]) == (
        order.id, "filled", "buy", 2, "KO"
    )  # fmt: skip
    assert row["fill"] == row["price"] == order.avg_fill_price and row["limit"] is None
    assert row["time"] == order.created_at.astimezone(UTC).strftime("%H:%M:%S")


async def test_market_sell_fills_at_bid_and_books_realised_pnl(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], alice: Identity
) -> None:
    aapl = await symbol(db, "AAPL")
    before = await book(db, alice.account_id, "AAPL")
    old_qty, old_avg, old_realised = before["position"]
    r = await place(client, alice, symbol="AAPL", side="sell", quantity=100)
    assert f"sold 100 AAPL @ {aapl.bid:,.2f}" in r.text
    after = await book(db, alice.account_id, "AAPL")
    trade = domain.apply_fill(old_qty, old_avg, "sell", 100, aapl.bid)
    qty, realised = trade.qty, trade.realised
    assert after["position"] == (qty, trade.avg_cost, old_realised + realised)
    assert realised == (aapl.bid - old_avg) * 100 and realised > 0
    assert after["cash"] == before["cash"] + aapl.bid * 100
    assert after["orders"][-1].avg_fill_price == aapl.bid

    # selling the rest closes the position: quantity 0, average cost reset
    await place(client, alice, symbol="AAPL", side="sell", quantity=qty)
    closed = await book(db, alice.account_id, "AAPL")
    assert closed["position"][:2] == (0, Decimal(0))
    # buying again reopens the same row
    r = await place(client, alice, symbol="AAPL", side="buy", quantity=3)
    assert "filled: bought 3 AAPL" in r.text
    reopened = await book(db, alice.account_id, "AAPL")
    assert reopened["position"][:2] == (3, aapl.ask)


async def test_limit_order_marketable_on_arrival_fills_at_the_touch(
    client: httpx.AsyncClient, db: async_sessionmaker[AsyncSession], alice: Identity
) -> None:
    msft = await symbol(db, "MSFT")
    await place_limit(client, alice, "buy", 2, "MSFT", msft.ask + 5)
    order = await last_order(db, alice.account_id)
    assert (order.status, order.avg_fill_price, order.limit_price) == (
        "filled",
        msft.ask,
        msft.ask + 5,
    )


# -- the venue: resting limit orders, cancel -----------------------------------------------


async def test_limit_order_rests_and_a_crossing_tick_fills_it_exactly_once(
    settings: OrdersSettings,
    db: async_sessionmaker[AsyncSession],
    alice: Identity,
    bob: Identity,
    bus: NatsBus,
) -> None:
    limit = await under_ask(db, "AAPL", 5)
    events = await collect(bus, wire.orders_events(alice.account_id))
    ui = await collect_ui(bus, alice.user_id, "order")
    async with two_processes(settings) as (first, _second):
        await bus.publish(wire.SESSION_OPENED, session_payload(alice))
        await wait_until(lambda: len(ui) >= 1)  # one of the two owns alice: one full render
        r = await place_limit(first.client, alice, "buy", 10, "AAPL", limit)
        order = await last_order(db, alice.account_id)
        assert order.status == "open" and order.filled_qty == 0
        assert f"Order #{order.id} open: buy 10 AAPL limit {limit:,.2f}" in r.text
        # the answer is the ticket; the open orders list is a live part, sent at once
        assert "order-open" not in r.text
        await wait_until(
            lambda: any(
                f'id="order-open-{order.id}"' in part["html"]
                for _, msg in ui
                for part in msg["parts"]
            )
        )
        before = await book(db, alice.account_id, "AAPL")

        # not crossing (ask a cent above the limit): still open, so the order fills at the
        # next tick's ask, which crosses; ticks reach the venue in order
        await bus.publish(wire.PRICES_TICKS, tick(1, AAPL=(limit, limit + CENT)))

        # crossing: both processes' venues see it; the order fills once, at the tick's ask
        fill_ask = limit - 1
        await bus.publish(wire.PRICES_TICKS, tick(2, AAPL=(fill_ask - CENT, fill_ask)))

        async def filled(who: Identity, order_id: int) -> bool:
            orders = (await book(db, who.account_id, "AAPL"))["orders"]
            return any(o.id == order_id and o.status == "filled" for o in orders)

        await wait_until(lambda: filled(alice, order.id))
        # crossing again: nothing more for the filled order. Bob's later order, crossed
        # only by this tick, is matched after it (orders by id): once bob's has filled,
        # the venue is done with the tick.
        await place_limit(first.client, bob, "buy", 1, "AAPL", fill_ask - CENT)
        bobs = await last_order(db, bob.account_id)
        assert bobs.status == "open"
        await bus.publish(wire.PRICES_TICKS, tick(3, AAPL=(fill_ask - 2, fill_ask - 1)))
        await wait_until(lambda: filled(bob, bobs.id))
        after = await book(db, alice.account_id, "AAPL")
        assert after["fills"] == before["fills"] + 1
        assert after["orders"][-1].avg_fill_price == fill_ask
        assert after["cash"] == before["cash"] - fill_ask * 10
        assert after["position"][0] == before["position"][0] + 10
        statuses = [(p["order_id"], p["status"]) for _, p in events]
        assert statuses.count((order.id, "filled")) == 1
        assert statuses.count((order.id, "open")) == 1
        tick_event = next(p for _, p in events if p["status"] == "filled")
        assert tick_event["ts"] == 1700000000000.0 + 2 and tick_event["price"] == str(fill_ask)
        # the live order lists follow the fill (the form itself is never pushed)
        await wait_until(
            lambda: any(
                part["id"] == "order-recent" and "order-status--filled" in part["html"]
                for _, msg in ui
                for part in msg["parts"]
                if not msg["full"]
            )
        )


async def test_an_order_crossed_by_a_tick_while_it_was_placed_fills_after_its_commit(
    process: Process,
    db: async_sessionmaker[AsyncSession],
    alice: Identity,
    bus: NatsBus,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The submit priced the order before a crossing tick reached the process, and the
    venue read the open orders for that tick before the order committed: matched once
    more after its commit, it fills at the latest quote, with no further tick."""
    limit = await under_ask(db, "KO", 3)
    table = await symbol(db, "KO")  # where KO was when the submit looked (not crossing)
    crossing_ask = limit - CENT
    venue, prices = process.app.state.venue, process.app.state.prices
    await bus.publish(wire.PRICES_TICKS, tick(1, KO=(crossing_ask - CENT, crossing_ask)))
    await wait_until(lambda: (prices.quote("KO") or {}).get("ask") == str(crossing_ask))
    await wait_until(lambda: venue.queries >= 1)  # the tick matched: no open order yet
    monkeypatch.setattr(
        components.OrderComponent, "_quote", lambda _self, _symbol: (table.bid, table.ask)
    )
    r = await place_limit(process.client, alice, "buy", 1, "KO", limit)
    assert "open" in r.text  # it rested, as priced

    async def filled() -> bool:
        return (await last_order(db, alice.account_id)).status == "filled"

    await wait_until(filled)
    order = await last_order(db, alice.account_id)
    assert order.avg_fill_price == crossing_ask and venue.queries == 2


async def test_racing_venues_fill_once(
    settings: OrdersSettings, db: async_sessionmaker[AsyncSession], alice: Identity
) -> None:
    async with two_processes(settings) as (first, second):
        for price in ("50", "51", "52"):  # KO trades near 65: these rest
            await place_limit(first.client, alice, "buy", 1, "KO", price)
        orders = (await book(db, alice.account_id, "KO"))["orders"]
        assert [o.status for o in orders] == ["open"] * 3
        before = await book(db, alice.account_id, "KO")
        quotes = {"KO": (Decimal("49.00"), Decimal("50.50"))}  # crosses 51 and 52
        results = await asyncio.gather(
            *(p.app.state.venue.match(quotes, 1.0) for p in (first, second, first, second))
        )
        filled = sorted(oid for result in results for oid in result)
        assert filled == [orders[1].id, orders[2].id]
        after = await book(db, alice.account_id, "KO")
        assert after["fills"] == before["fills"] + 2
        assert [o.status for o in after["orders"]] == ["open", "filled", "filled"]


async def test_cancel_open_order_and_not_others(
    client: httpx.AsyncClient,
    db: async_sessionmaker[AsyncSession],
    alice: Identity,
    bob: Identity,
    bus: NatsBus,
) -> None:
    events = await collect(bus, wire.orders_events(alice.account_id))
    await place_limit(client, alice, "sell", 400, "AAPL", "9999")
    resting = await last_order(db, alice.account_id)
    # the open sell reserves the shares: nothing left to sell at market
    r = await submit(client, alice, symbol="AAPL", side="sell", quantity=1)
    assert r.status_code == 422 and "(400 already in open sell orders)" in r.text

    r = await cancel(client, bob, resting.id)
    assert r.status_code == 422 and f"Order #{resting.id} is not open" in r.text

    r = await cancel(client, alice, resting.id)
    assert r.status_code == 200 and f"Order #{resting.id} cancelled" in r.text
    assert (await last_order(db, alice.account_id)).status == "cancelled"
    await wait_until(lambda: (resting.id, "cancelled") in [(p["order_id"], p["status"])
                                                           for _, p in events])  # fmt: skip
    r = await cancel(client, alice, resting.id)
    assert r.status_code == 422 and f"Order #{resting.id} is not open" in r.text

    await place(client, alice, symbol="AAPL", side="sell", quantity=1)
    filled = await last_order(db, alice.account_id)
    r = await cancel(client, alice, filled.id)
    assert r.status_code == 422 and f"Order #{filled.id} is not open" in r.text


async def test_limit_sell_beyond_the_position_at_fill_time_is_rejected(
    process: Process, db: async_sessionmaker[AsyncSession], alice: Identity
) -> None:
    await place_limit(process.client, alice, "sell", 300, "AAPL", "500")
    aapl = await symbol(db, "AAPL")
    async with db.begin() as s:  # the position shrank meanwhile (e.g. a corporate action)
        await s.execute(
            update(Position)
            .where(Position.account_id == alice.account_id, Position.symbol_id == aapl.id)
            .values(quantity=100)
        )
    before = await book(db, alice.account_id, "AAPL")
    venue = process.app.state.venue
    assert await venue.match({"AAPL": (Decimal("500"), Decimal("500.02"))}) == []
    after = await book(db, alice.account_id, "AAPL")
    order = after["orders"][-1]
    assert order.status == "rejected"
    assert order.reject_reason == "You hold 100 AAPL; cannot sell 300"
    assert (after["cash"], after["position"], after["fills"]) == (
        before["cash"],
        before["position"],
        before["fills"],
    )
    r = await process.client.get("/components/order", headers=identity_headers(alice))
    assert "order-status--rejected" in r.text and "cannot sell 300" in r.text
