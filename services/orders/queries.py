"""Read models of the order component: an account's orders as template rows."""

from __future__ import annotations

from datetime import UTC
from decimal import Decimal
from typing import Any, TypedDict

from sqlalchemy import bindparam, select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import Order, Symbol
from shared.db.reads import Read

__all__ = ["OrderRow", "order_rows", "tickers"]

_COLUMNS = (
    Order.id,
    Order.status,
    Order.side,
    Order.order_type,
    Order.quantity,
    Symbol.ticker,
    Order.limit_price,
    Order.avg_fill_price,
    Order.reject_reason,
    Order.created_at,
)


class OrderRow(TypedDict):
    """An order as the ticket lists it."""

    id: int
    status: str
    side: str
    order_type: str
    qty: int
    symbol: str
    price: Decimal | None  # the fill price once filled, else the limit
    limit: Decimal | None
    fill: Decimal | None
    reason: str | None
    time: str  # placed at, HH:MM:SS UTC


def _row(row: Any) -> OrderRow:
    oid, status, side, order_type, qty, ticker, limit_price, fill_price, reason, created = row
    return {
        "id": oid,
        "status": status,
        "side": side,
        "order_type": order_type,
        "qty": qty,
        "symbol": ticker,
        "price": fill_price if fill_price is not None else limit_price,
        "limit": limit_price,
        "fill": fill_price,
        "reason": reason,
        # placed at, as the trader reads it: UTC, to the second
        "time": created.astimezone(UTC).strftime("%H:%M:%S") if created is not None else "",
    }


def _newest(*, open_only: bool) -> Read:
    query = (
        select(*_COLUMNS)
        .join(Symbol, Order.symbol_id == Symbol.id)
        .where(Order.account_id == bindparam("account_id"))
        .order_by(Order.id.desc())
        .limit(bindparam("limit"))
    )
    if open_only:
        query = query.where(Order.status == "open")
    return Read(query)


_NEWEST = {True: _newest(open_only=True), False: _newest(open_only=False)}
_TICKERS = Read(select(Symbol.ticker).order_by(Symbol.ticker))


async def order_rows(
    session: AsyncSession, account_id: int, open_only: bool, limit: int
) -> list[OrderRow]:
    """The account's newest orders (only ``open`` ones with ``open_only``), newest first."""
    rows = await _NEWEST[open_only].rows(session, account_id=account_id, limit=limit)
    return [_row(r) for r in rows]


async def tickers(session: AsyncSession) -> list[str]:
    """Every ticker, in order (the ticket's list of symbols)."""
    return await _TICKERS.scalars(session)
