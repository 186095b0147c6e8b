"""Helpers the orders service tests share: submit an order, read back what it wrote."""

from __future__ import annotations

from typing import Any
from uuid import uuid4

import httpx
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared.db.models import Account, Fill, Order, Position, Symbol
from shared.identity import Identity
from tests.support import identity_headers

__all__ = ["book", "order_form", "submit", "symbol"]


def order_form(**fields: Any) -> dict[str, str]:
    form = {"order_type": "market", "client_order_id": uuid4().hex, **fields}
    return {k: str(v) for k, v in form.items()}


async def submit(client: httpx.AsyncClient, who: Identity, **fields: Any) -> httpx.Response:
    return await client.post(
        "/components/order/events/submit", data=order_form(**fields), headers=identity_headers(who)
    )


async def symbol(db: async_sessionmaker[AsyncSession], ticker: str) -> Symbol:
    async with db() as s:
        return (await s.execute(select(Symbol).where(Symbol.ticker == ticker))).scalar_one()


async def book(db: async_sessionmaker[AsyncSession], account_id: int, ticker: str) -> dict:
    """Everything an order may write for ``account_id`` / ``ticker``."""
    async with db() as s:
        cash = await s.scalar(select(Account.cash).where(Account.id == account_id))
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
