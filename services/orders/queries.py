"""Read models of the order component: an account's orders as template rows."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, TypedDict

from sqlalchemy import Select, bindparam, func, literal, select, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import Order, Symbol
from shared.db.reads import Read

__all__ = ["OrderRow", "TickerList", "order_rows", "placed_order"]

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
    # placed at, as the trader reads it: UTC, to the second. Formatted by the database: in
    # Python, for the 100 rows an order reads, it was ~5 % of the order's CPU
    func.to_char(func.timezone("UTC", Order.created_at), "HH24:MI:SS"),
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
    oid, status, side, order_type, qty, ticker, limit_price, fill_price, reason, placed_at = row
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
        "time": placed_at or "",
    }


def _newest(*, open_only: bool) -> Select[*tuple[Any, ...]]:
    query = (
        select(literal(open_only).label("open_only"), *_COLUMNS)
        .join(Symbol, Order.symbol_id == Symbol.id)
        .where(Order.account_id == bindparam("account_id"))
        .order_by(Order.id.desc())
        .limit(bindparam("open_limit" if open_only else "limit"))
    )
    if open_only:
        query = query.where(Order.status == "open")
    return query


# both lists in one round trip (each is a few rows)
_LISTS = union_all(_newest(open_only=True), _newest(open_only=False)).subquery()
_NEWEST = Read(select(*_LISTS.c))
_TICKERS = Read(select(Symbol.ticker).order_by(Symbol.ticker))


async def order_rows(
    session: AsyncSession, account_id: int, open_limit: int, limit: int
) -> tuple[list[OrderRow], list[OrderRow]]:
    """The account's newest ``open_limit`` open orders and newest ``limit`` orders of any
    status, each newest first."""
    rows = await _NEWEST.rows(session, account_id=account_id, open_limit=open_limit, limit=limit)
    rows.sort(key=lambda r: r[1], reverse=True)  # by id: a union keeps no order
    return [_row(r[1:]) for r in rows if r[0]], [_row(r[1:]) for r in rows if not r[0]]


async def placed_order(
    session: AsyncSession, account_id: int, client_order_id: str
) -> tuple[Order, str]:
    """The account's order placed with ``client_order_id``, and its ticker (it exists)."""
    row = (
        await session.execute(
            select(Order, Symbol.ticker)
            .join(Symbol, Order.symbol_id == Symbol.id)
            .where(Order.account_id == account_id, Order.client_order_id == client_order_id)
        )
    ).one()
    return row[0], row[1]


class TickerList:
    """Every ticker, in order (the ticket's list of symbols), read at most once every
    ``max_age_s``: the universe changes with a migration or a seed, and each mount (a
    thousand of them when traders connect) and each event then skips a round trip. A
    symbol added since shows in the list that much later; an order for it is checked
    against the table whatever the list says."""

    def __init__(self, max_age_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.max_age_s = max_age_s
        self._clock = clock
        self._tickers: list[str] | None = None
        self._read_at = 0.0
        self._reading = asyncio.Lock()  # a thousand mounts at once read it once

    def _fresh(self) -> list[str] | None:
        if self._tickers is None or self._clock() - self._read_at >= self.max_age_s:
            return None
        return self._tickers

    async def get(self, session: AsyncSession) -> list[str]:
        """The list (shared: not to be changed)."""
        tickers = self._fresh()
        if tickers is not None:
            return tickers
        async with self._reading:
            tickers = self._fresh()
            if tickers is None:
                tickers = self._tickers = await _TICKERS.scalars(session)
                self._read_at = self._clock()
        return tickers
