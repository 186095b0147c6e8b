"""Queries more than one service runs, written once."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BindParameter, Select, and_, select
from sqlalchemy.orm import InstrumentedAttribute

from shared.db.models import Account, Position, Symbol

__all__ = ["account_and_positions", "held_positions"]


def held_positions(
    *columns: InstrumentedAttribute[Any], account_id: int | BindParameter[int] | None = None
) -> Select[Any]:
    """``columns`` of every open position (quantity above 0) joined with its symbol (ticker,
    prices, margin rate, sector); of one account, or of every account when ``account_id``
    is None (or a :func:`~sqlalchemy.bindparam` for a :class:`~shared.db.reads.Read`).
    Unordered: a caller that shows the rows orders them."""
    query = (
        select(*columns)
        .select_from(Position)
        .join(Symbol, Position.symbol_id == Symbol.id)
        .where(Position.quantity > 0)
    )
    if account_id is not None:
        query = query.where(Position.account_id == account_id)
    return query


def account_and_positions(
    account_columns: tuple[InstrumentedAttribute[Any], ...],
    *columns: InstrumentedAttribute[Any],
    account_id: int | BindParameter[int],
) -> Select[Any]:
    """One account's ``account_columns`` and ``columns`` of each of its open positions
    (joined with its symbol, as :func:`held_positions`), in one round trip: a row per
    position, or one row whose position columns are all None when it holds none; no row
    without the account. Unordered."""
    return (
        select(*account_columns, *columns)
        .select_from(Account)
        .outerjoin(Position, and_(Position.account_id == Account.id, Position.quantity > 0))
        .outerjoin(Symbol, Position.symbol_id == Symbol.id)
        .where(Account.id == account_id)
    )
