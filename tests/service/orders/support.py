"""Helpers the orders service tests share: run orders processes, submit an order, move the
market, read back what an order wrote."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import uuid4

import httpx
from fastapi import FastAPI
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.orders.app import create_app
from services.orders.settings import OrdersSettings
from shared.db.models import Account, Fill, Order, Position, Symbol
from shared.identity import Identity
from tests.support import identity_headers, running

__all__ = [
    "CENT",
    "Process",
    "book",
    "last_order",
    "order_form",
    "place",
    "place_limit",
    "set_cash",
    "started",
    "submit",
    "symbol",
    "tick",
    "two_processes",
    "under_ask",
]

CENT = Decimal("0.01")


@dataclass
class Process:
    """One running orders process (a pod) and a client of it."""

    app: FastAPI
    client: httpx.AsyncClient


@asynccontextmanager
async def started(settings: OrdersSettings) -> AsyncIterator[Process]:
    """One orders process, running until the block ends."""
    app = create_app(settings)
    async with running(app) as client:
        yield Process(app, client)


@asynccontextmanager
async def two_processes(settings: OrdersSettings) -> AsyncIterator[tuple[Process, Process]]:
    """Two orders processes on one database and nats-server, as two pods are."""
    async with started(settings) as first, started(settings) as second:
        yield first, second


def order_form(**fields: Any) -> dict[str, str]:
    form = {"order_type": "market", "client_order_id": uuid4().hex, **fields}
    return {k: str(v) for k, v in form.items()}


async def submit(client: httpx.AsyncClient, who: Identity, **fields: Any) -> httpx.Response:
    return await client.post(
        "/components/order/events/submit", data=order_form(**fields), headers=identity_headers(who)
    )


async def place(client: httpx.AsyncClient, who: Identity, **fields: Any) -> httpx.Response:
    """Submit an order the service must take (200; else the test fails with its answer)."""
    r = await submit(client, who, **fields)
    assert r.status_code == 200, r.text
    return r


async def place_limit(
    client: httpx.AsyncClient, who: Identity, side: str, quantity: int, ticker: str, price: object
) -> httpx.Response:
    """A limit order (``side`` ``quantity`` ``ticker`` at ``price``) the service must take."""
    return await place(
        client, who, symbol=ticker, side=side, quantity=quantity, order_type="limit",
        limit_price=price,
    )  # fmt: skip


async def under_ask(db: async_sessionmaker[AsyncSession], ticker: str, by: int) -> Decimal:
    """A limit price ``by`` under ``ticker``'s stored ask: a buy at it rests."""
    return ((await symbol(db, ticker)).ask - by).quantize(CENT)


def tick(seq: int, **quotes: tuple[object, object]) -> dict[str, Any]:
    """A ``prices.ticks`` message: ticker=(bid, ask), last at the bid, ts 1_700_000_000_000
    + seq."""
    prices = {
        t: {"last": str(bid), "bid": str(bid), "ask": str(ask), "chg_pct": "0"}
        for t, (bid, ask) in quotes.items()
    }
    return {"seq": seq, "ts": 1_700_000_000_000.0 + seq, "prices": prices}


async def set_cash(
    db: async_sessionmaker[AsyncSession], account_id: int, cash: Decimal | int | str
) -> None:
    async with db.begin() as s:
        await s.execute(update(Account).where(Account.id == account_id).values(cash=Decimal(cash)))


async def symbol(db: async_sessionmaker[AsyncSession], ticker: str) -> Symbol:
    async with db() as s:
        return (await s.execute(select(Symbol).where(Symbol.ticker == ticker))).scalar_one()


async def last_order(db: async_sessionmaker[AsyncSession], account_id: int) -> Order:
    """The account's newest order."""
    async with db() as s:
        newest = select(Order).where(Order.account_id == account_id).order_by(Order.id.desc())
        return (await s.scalars(newest.limit(1))).one()


async def book(db: async_sessionmaker[AsyncSession], account_id: int, ticker: str) -> dict:
    """Everything an order may write for ``account_id`` / ``ticker``."""
    async with db() as s:
        cash = await s.scalar(select(Account.cash).where(Account.id == account_id))
        # The position row itself, not shared.db.queries.held_positions: that leaves out a
        # closed position (quantity 0, average cost reset), which is something an order
        # writes, and these tests check the service's writes independently of its queries.
        pos = (
            await s.execute(
                select(Position.quantity, Position.avg_cost, Position.realised_pnl)
                .join(Symbol, Position.symbol_id == Symbol.id)
                .where(Position.account_id == account_id, Symbol.ticker == ticker)
            )
        ).first()
        orders = (
            await s.scalars(select(Order).where(Order.account_id == account_id).order_by(Order.id))
        ).all()
        fills = await s.scalar(
            select(func.count())
            .select_from(Fill)
            .join(Order, Fill.order_id == Order.id)
            .where(Order.account_id == account_id)
        )
    return {"cash": cash, "position": tuple(pos) if pos else None, "orders": list(orders),
            "fills": fills}  # fmt: skip
