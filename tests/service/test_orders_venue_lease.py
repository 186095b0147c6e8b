"""The venue under a lease: of two orders processes only the lease holder matches ticks;
a handoff fills what became marketable meanwhile, once."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.orders.app import create_app
from services.orders.settings import OrdersSettings
from shared import wire
from shared.bus import NatsBus
from shared.identity import Identity
from tests.service.orders_support import book, submit, symbol
from tests.support import running, wait_until

pytestmark = pytest.mark.service

CENT = Decimal("0.01")


@pytest.fixture
def settings(service_env: None) -> OrdersSettings:
    return OrdersSettings()


def tick(seq: int, ticker: str, bid: Decimal, ask: Decimal) -> dict[str, Any]:
    quote = {"last": str(bid), "bid": str(bid), "ask": str(ask), "chg_pct": "0"}
    return {"seq": seq, "ts": 1700000000000.0 + seq, "prices": {ticker: quote}}


def holder_and_other(first: FastAPI, second: FastAPI) -> tuple[FastAPI, FastAPI]:
    leading = [app for app in (first, second) if app.state.venue.matching]
    assert len(leading) == 1, "exactly one replica holds the venue lease"
    return leading[0], second if leading[0] is first else first


async def test_only_the_lease_holder_matches_and_a_crossing_tick_fills_once(
    settings: OrdersSettings, db: async_sessionmaker[AsyncSession], alice: Identity, bus: NatsBus
) -> None:
    msft = await symbol(db, "MSFT")
    limit = (msft.ask - 5).quantize(CENT)
    first, second = create_app(settings), create_app(settings)
    async with running(first) as client, running(second):
        holder, other = holder_and_other(first, second)
        r = await submit(
            client, alice, symbol="MSFT", side="buy", quantity=3, order_type="limit",
            limit_price=limit,
        )  # fmt: skip
        assert r.status_code == 200, r.text
        before = await book(db, alice.account_id, "MSFT")
        assert before["orders"][-1].status == "open"
        queries = holder.state.venue.queries

        await bus.publish(wire.PRICES_TICKS, tick(1, "MSFT", limit - 2, limit - 1))  # crosses
        await bus.publish(wire.PRICES_TICKS, tick(2, "MSFT", limit + 1, limit + 2))  # does not
        await wait_until(lambda: other.state.venue.skipped == 2)  # both ticks reached both
        await wait_until(lambda: holder.state.venue.queries == queries + 2)

        after = await book(db, alice.account_id, "MSFT")
        order = after["orders"][-1]
        assert (order.status, order.avg_fill_price) == ("filled", limit - 1)
        assert after["fills"] == before["fills"] + 1
        assert other.state.venue.queries == 0, "a replica without the lease queried"
        assert holder.state.venue.skipped == 0


async def test_a_tick_during_the_handoff_fills_on_the_new_holder(
    settings: OrdersSettings, db: async_sessionmaker[AsyncSession], alice: Identity, bus: NatsBus
) -> None:
    ko = await symbol(db, "KO")
    limit = (ko.ask - 3).quantize(CENT)
    first, second = create_app(settings), create_app(settings)
    async with running(first) as client_1, running(second) as client_2:
        holder, other = holder_and_other(first, second)
        r = await submit(
            client_1, alice, symbol="KO", side="buy", quantity=2, order_type="limit",
            limit_price=limit,
        )  # fmt: skip
        assert r.status_code == 200, r.text
        before = await book(db, alice.account_id, "KO")
        # the holder's pod is about to stop: its preStop hook gives the lease back
        released = await (client_1 if holder is first else client_2).post("/ops/release")
        assert released.status_code == 204
        assert not holder.state.venue.matching

        # a crossing tick while nobody holds the lease: noted, then matched on takeover
        await bus.publish(wire.PRICES_TICKS, tick(1, "KO", limit - 2, limit - 1))
        await wait_until(lambda: other.state.venue.queries >= 1, timeout=10)

        async def filled() -> bool:
            return (await book(db, alice.account_id, "KO"))["orders"][-1].status == "filled"

        await wait_until(filled)
        after = await book(db, alice.account_id, "KO")
        assert after["fills"] == before["fills"] + 1
        assert after["orders"][-1].avg_fill_price == limit - 1
        assert holder.state.venue.queries == 0
