"""The venue under a lease: of two orders processes only the lease holder matches ticks;
a handoff fills what became marketable meanwhile, once."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.orders.settings import OrdersSettings
from shared import wire
from shared.bus import NatsBus
from shared.identity import Identity
from tests.service.orders.support import (
    Process,
    book,
    last_order,
    place_limit,
    tick,
    two_processes,
    under_ask,
)
from tests.support import wait_until

pytestmark = pytest.mark.service


def holder_and_other(first: Process, second: Process) -> tuple[Process, Process]:
    leading = [p for p in (first, second) if p.app.state.venue.matching]
    assert len(leading) == 1, "exactly one replica holds the venue lease"
    return leading[0], second if leading[0] is first else first


async def test_only_the_lease_holder_matches_and_a_crossing_tick_fills_once(
    settings: OrdersSettings, db: async_sessionmaker[AsyncSession], alice: Identity, bus: NatsBus
) -> None:
    limit = await under_ask(db, "MSFT", 5)
    async with two_processes(settings) as (first, second):
        holder, other = holder_and_other(first, second)
        await place_limit(first.client, alice, "buy", 3, "MSFT", limit)
        before = await book(db, alice.account_id, "MSFT")
        assert before["orders"][-1].status == "open"
        holder_venue, other_venue = holder.app.state.venue, other.app.state.venue
        queries = holder_venue.queries

        await bus.publish(wire.PRICES_TICKS, tick(1, MSFT=(limit - 2, limit - 1)))  # crosses
        await bus.publish(wire.PRICES_TICKS, tick(2, MSFT=(limit + 1, limit + 2)))  # does not
        await wait_until(lambda: other_venue.skipped == 2)  # both ticks reached both
        await wait_until(lambda: holder_venue.queries == queries + 2)

        after = await book(db, alice.account_id, "MSFT")
        order = after["orders"][-1]
        assert (order.status, order.avg_fill_price) == ("filled", limit - 1)
        assert after["fills"] == before["fills"] + 1
        assert other_venue.queries == 0, "a replica without the lease queried"
        assert holder_venue.skipped == 0


async def test_a_tick_during_the_handoff_fills_on_the_new_holder(
    settings: OrdersSettings, db: async_sessionmaker[AsyncSession], alice: Identity, bus: NatsBus
) -> None:
    limit = await under_ask(db, "KO", 3)
    async with two_processes(settings) as (first, second):
        holder, other = holder_and_other(first, second)
        await place_limit(first.client, alice, "buy", 2, "KO", limit)
        before = await book(db, alice.account_id, "KO")
        # a web page open on the same machine cannot make it give the lease up: a form
        # sends no custom header, and a browser's request says its Origin
        for headers in ({}, {"X-Ops-Release": "1", "Origin": "https://evil.example"}):
            refused = await holder.client.post("/ops/release", headers=headers)
            assert refused.status_code == 403
        assert holder.app.state.venue.matching
        # the holder's pod is about to stop: its preStop hook gives the lease back
        released = await holder.client.post("/ops/release", headers={"X-Ops-Release": "1"})
        assert released.status_code == 204
        assert not holder.app.state.venue.matching

        # a crossing tick while nobody holds the lease: noted, then matched on takeover
        await bus.publish(wire.PRICES_TICKS, tick(1, KO=(limit - 2, limit - 1)))
        await wait_until(lambda: other.app.state.venue.queries >= 1, timeout=10)

        async def filled() -> bool:
            return (await last_order(db, alice.account_id)).status == "filled"

        await wait_until(filled)
        after = await book(db, alice.account_id, "KO")
        assert after["fills"] == before["fills"] + 1
        assert after["orders"][-1].avg_fill_price == limit - 1
        assert holder.app.state.venue.queries == 0
