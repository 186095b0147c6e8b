"""Money that adds up, through the real orders service (PostgreSQL and NATS): each case
was a bug: realised P&L rounded per fill, an average cost the database rounded, a margin
limit of 0 that switched the margin check off, a feed that never ticked trusted."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.orders.settings import OrdersSettings
from shared import wire
from shared.bus import NatsBus
from shared.db.models import Account
from shared.identity import Identity
from tests.service.orders.support import Process, book, place, started, submit, tick
from tests.support import wait_until

pytestmark = pytest.mark.service

D = Decimal
TICKER = "ORCL"  # not in the demo accounts: every test starts flat


class Market:
    """Sets the quote the service trades at, and waits until the service has it."""

    def __init__(self, service: FastAPI, bus: NatsBus) -> None:
        self.service, self.bus, self.seq = service, bus, 0

    async def quote(self, bid: str, ask: str) -> None:
        self.seq += 1
        await self.bus.publish(wire.PRICES_TICKS, tick(self.seq, **{TICKER: (bid, ask)}))
        book = self.service.state.prices

        def seen() -> bool:
            quote = book.quote(TICKER)
            return quote is not None and str(quote["ask"]) == ask and str(quote["bid"]) == bid

        await wait_until(seen)


@pytest.fixture
def market(process: Process, bus: NatsBus) -> Market:
    return Market(process.app, bus)


async def trade(
    client: httpx.AsyncClient, market: Market, who: Identity, side: str, qty: int, price: str
) -> None:
    """A market order filled at ``price`` (buys lift the ask, sells hit the bid)."""
    if side == "buy":
        await market.quote(str(D(price) - D("0.01")), price)
    else:
        await market.quote(price, str(D(price) + D("0.01")))
    r = await place(client, who, symbol=TICKER, side=side, quantity=qty)
    assert "filled" in r.text, r.text


async def run(
    client: httpx.AsyncClient,
    market: Market,
    db: async_sessionmaker[AsyncSession],
    who: Identity,
    fills: list[tuple[str, int, str]],
) -> dict[str, Any]:
    before = await book(db, who.account_id, TICKER)
    for side, qty, price in fills:
        await trade(client, market, who, side, qty, price)
    after = await book(db, who.account_id, TICKER)
    return {"cash_moved": after["cash"] - before["cash"], "position": after["position"]}


async def test_realised_pnl_is_the_cash_the_round_trip_made(
    client: httpx.AsyncClient,
    market: Market,
    db: async_sessionmaker[AsyncSession],
    alice: Identity,
) -> None:
    fills = [("buy", 1, "10.00"), ("buy", 1, "10.01"), ("sell", 1, "10.01"), ("sell", 1, "10.01")]
    result = await run(client, market, db, alice, fills)
    qty, _avg, realised = result["position"]
    assert qty == 0
    assert result["cash_moved"] == D("0.01")
    assert realised == D("0.01")  # was 0.02: half a cent rounded up on each sell


async def test_an_average_cost_of_many_places_realises_exactly(
    client: httpx.AsyncClient,
    market: Market,
    db: async_sessionmaker[AsyncSession],
    alice: Identity,
) -> None:
    fills = [("buy", 100, "10.00"), ("buy", 200, "10.01"), ("sell", 300, "10.01")]
    result = await run(client, market, db, alice, fills[:2])
    assert result["position"][1] * 300 == D("3002.000000000100")  # 10.006666666667
    result = await run(client, market, db, alice, fills[2:])
    assert result["cash_moved"] == D("3003.00")
    assert result["position"][2] == D("1.00")  # was 0.99: the table kept 10.0067


async def test_a_zero_margin_limit_refuses_every_buy(
    client: httpx.AsyncClient,
    market: Market,
    db: async_sessionmaker[AsyncSession],
    bob: Identity,
) -> None:
    async with db.begin() as s:
        await s.execute(update(Account).where(Account.id == bob.account_id).values(margin_limit=0))
    await market.quote("60.00", "60.02")
    before = await book(db, bob.account_id, TICKER)
    r = await submit(client, bob, symbol=TICKER, side="buy", quantity=1000)
    assert r.status_code == 422
    assert "No margin available" in r.text
    assert await book(db, bob.account_id, TICKER) == before


async def test_a_feed_that_never_ticked_is_silent(
    settings: OrdersSettings, db: async_sessionmaker[AsyncSession], alice: Identity, bus: NatsBus
) -> None:
    settings.max_feed_silence_s = 0.3
    async with started(settings) as orders:
        service, client = orders.app, orders.client
        await wait_until(lambda: service.state.prices.silent_for() > 0.3)  # no tick since start
        before = await book(db, alice.account_id, TICKER)
        r = await submit(client, alice, symbol=TICKER, side="buy", quantity=1)
        assert r.status_code == 422
        assert "Market data is delayed" in r.text
        assert await book(db, alice.account_id, TICKER) == before
        await Market(service, bus).quote("168.90", "168.92")  # the feed is back
        assert (
            await submit(client, alice, symbol=TICKER, side="buy", quantity=1)
        ).status_code == 200
