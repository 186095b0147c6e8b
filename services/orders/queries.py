"""Read models of the order component: an account's orders as template rows."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import Order, Symbol

__all__ = ["order_rows"]

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
)


def _row(row: Any) -> dict[str, Any]:
    oid, status, side, order_type, qty, ticker, limit_price, fill_price, reason = row
    return {
        "id": oid,
        "status": status,
        "side": side,
        "order_type": order_type,
        "qty": qty,
        "symbol": ticker,
        "price": fill_price if fill_price is not None else limit_price,
        "reason": reason,
    }


async def order_rows(
    session: AsyncSession, account_id: int, open_only: bool, limit: int
) -> list[dict[str, Any]]:
    """The account's newest orders (only ``open`` ones with ``open_only``), newest first."""
    query = (
        select(*_COLUMNS)
        .join(Symbol, Order.symbol_id == Symbol.id)
        .where(Order.account_id == account_id)
        .order_by(Order.id.desc())
        .limit(limit)
    )
    if open_only:
        query = query.where(Order.status == "open")
    return [_row(r) for r in await session.execute(query)]
