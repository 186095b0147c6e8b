"""Executing orders against an account: row locks, pre-trade checks, fills, events.

Lock order, everywhere: order (venue, cancel) → account → position. Every write to an
account's positions and cash happens under its account row lock, so two fills of the
same account (two requests, two orders-service processes) never interleave.
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from services.orders import domain as rules
from services.orders.booking import book_fill, filled_columns, utc_now
from services.orders.domain import Rejected
from shared import domain, wire
from shared.db.models import Account, Fill, Order, Position, Symbol
from shared.db.queries import held_positions
from shared.outbox import stage

__all__ = [
    "announce",
    "assess_order",
    "cancel",
    "check_margin",
    "execute_fill",
    "find_symbol",
    "insert_open_order",
    "lock_account",
    "lock_account_and_find",
    "lock_position",
    "lock_position_and_holdings",
    "margin_after",
    "reject",
    "reserved_for_sale",
]

log = logging.getLogger(__name__)


async def lock_account(session: AsyncSession, account_id: int) -> Account:
    account = await session.scalar(
        select(Account)
        .where(Account.id == account_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if account is None:
        raise Rejected("__all__", "No trading account")
    return account


_PLACED = aliased(Symbol)
# built once: an order's statements are the same every time but for their parameters, and
# building one (its columns, joins and clauses) cost more CPU than running it
_LOCK_ACCOUNT_AND_FIND = (
    select(Account, Symbol, Order, _PLACED.ticker)
    .select_from(Account)
    .outerjoin(Symbol, Symbol.ticker == bindparam("ticker"))
    .outerjoin(
        Order,
        and_(Order.account_id == Account.id, Order.client_order_id == bindparam("client_order_id")),
    )
    .outerjoin(_PLACED, _PLACED.id == Order.symbol_id)
    .where(Account.id == bindparam("account_id"))
    .with_for_update(of=Account)
    .execution_options(populate_existing=True)
)
_LOCK_POSITION = (
    select(Position)
    .where(Position.account_id == bindparam("account_id"))
    .where(Position.symbol_id == bindparam("symbol_id"))
    .with_for_update()
    .execution_options(populate_existing=True)
)
_POSITION_AND_HOLDINGS = (
    select(Position, Symbol.ticker, Symbol.last, Symbol.margin_rate)
    .join(Symbol, Position.symbol_id == Symbol.id)
    .where(
        Position.account_id == bindparam("account_id"),
        or_(Position.quantity > 0, Position.symbol_id == bindparam("symbol_id")),
    )
    .execution_options(populate_existing=True)
)
_FIND_SYMBOL = (
    select(Symbol)
    .where(Symbol.ticker == bindparam("ticker"))
    .execution_options(populate_existing=True)
)

_RESERVED_FOR_SALE = select(func.coalesce(func.sum(Order.quantity - Order.filled_qty), 0)).where(
    Order.account_id == bindparam("account_id"),
    Order.symbol_id == bindparam("symbol_id"),
    Order.side == "sell",
    Order.status == "open",
)


async def lock_account_and_find(
    session: AsyncSession, account_id: int, ticker: str, client_order_id: str
) -> tuple[Account, Symbol | None, tuple[Order, str] | None]:
    """:func:`lock_account`, :func:`find_symbol` and the account's order placed with
    ``client_order_id`` (with its ticker), in one round trip (an order's first).

    The symbol's and the order's rows are as they were when the statement began, before
    any wait for the lock: the ticker, id and margin rate do not change meanwhile, and
    the symbol's prices trail the feed by a write interval anyway (an order trades at the
    live book's quote). An order with the same id committed during that wait is not
    seen here; the insert's conflict on the id then finds it."""
    params = {
        "account_id": account_id,
        "ticker": ticker.strip().upper(),
        "client_order_id": client_order_id,
    }
    row = (await session.execute(_LOCK_ACCOUNT_AND_FIND, params)).first()
    if row is None:
        raise Rejected("__all__", "No trading account")
    account, symbol, existing, existing_ticker = row
    return account, symbol, None if existing is None else (existing, existing_ticker)


async def lock_position(session: AsyncSession, account_id: int, symbol_id: int) -> Position | None:
    params = {"account_id": account_id, "symbol_id": symbol_id}
    return await session.scalar(_LOCK_POSITION, params)


async def lock_position_and_holdings(
    session: AsyncSession, account_id: int, symbol_id: int
) -> tuple[Position | None, list[tuple[int, domain.Holding]]]:
    """What :func:`lock_position` and :func:`margin_after` read, in one round trip (a
    buy's): the position in ``symbol_id`` (even a closed one), and every open position of
    the account as a holding. No row lock: the caller holds the account's, under which
    every write of its positions happens (locking them all cost a write per holding)."""
    params = {"account_id": account_id, "symbol_id": symbol_id}
    rows = await session.execute(_POSITION_AND_HOLDINGS, params)
    position, holdings = None, []
    for row, ticker, last, rate in rows:
        if row.symbol_id == symbol_id:
            position = row
        if row.quantity > 0:
            holding = domain.Holding(ticker, row.quantity, last, margin_rate=rate)
            holdings.append((row.symbol_id, holding))
    return position, holdings


async def find_symbol(session: AsyncSession, ticker: str) -> Symbol | None:
    return await session.scalar(_FIND_SYMBOL, {"ticker": ticker.strip().upper()})


async def _holdings(session: AsyncSession, account_id: int) -> list[tuple[int, domain.Holding]]:
    rows = await session.execute(
        held_positions(
            Position.symbol_id,
            Position.quantity,
            Symbol.ticker,
            Symbol.last,
            Symbol.margin_rate,
            account_id=account_id,
        )
    )
    return [
        (sid, domain.Holding(ticker, qty, last, margin_rate=rate))
        for sid, qty, ticker, last, rate in rows
    ]


async def margin_after(
    session: AsyncSession,
    account: Account,
    symbol: Symbol,
    qty: int,
    held_now: list[tuple[int, domain.Holding]] | None = None,
) -> Decimal:
    """The margin ``account`` would use after buying ``qty`` of ``symbol`` (table prices);
    ``held_now``: its open positions, if already read (:func:`lock_position_and_holdings`)."""
    if held_now is None:
        held_now = await _holdings(session, account.id)
    holdings, held = [], False
    for symbol_id, holding in held_now:
        if symbol_id == symbol.id:
            held = True
            holding = domain.Holding(
                holding.ticker, holding.qty + qty, holding.last, margin_rate=holding.margin_rate
            )
        holdings.append(holding)
    if not held:
        holdings.append(
            domain.Holding(symbol.ticker, qty, symbol.last, margin_rate=symbol.margin_rate)
        )
    return domain.margin_used(holdings)


async def check_margin(session: AsyncSession, account: Account, symbol: Symbol, qty: int) -> None:
    """Pre-trade check: buying ``qty`` must not take utilisation over 100 %."""
    rules.check_margin_after(
        await margin_after(session, account, symbol, qty), account.margin_limit
    )


async def reserved_for_sale(session: AsyncSession, account_id: int, symbol_id: int) -> int:
    """What the account's open sell orders of ``symbol_id`` still reserve."""
    params = {"account_id": account_id, "symbol_id": symbol_id}
    reserved = await session.scalar(_RESERVED_FOR_SALE, params)
    return int(reserved or 0)


async def assess_order(
    session: AsyncSession,
    account: Account,
    symbol: Symbol,
    position: Position | None,
    side: str,
    qty: int,
    price: Decimal,
    held_now: list[tuple[int, domain.Holding]] | None = None,
) -> rules.Assessment:
    """The pre-trade check (:func:`services.orders.domain.assess`) with what it needs read
    from the database: the margin after a buy (from ``held_now`` if given: see
    :func:`margin_after`), the position and what open sells reserve."""
    held = position.quantity if position is not None else 0
    if side == "sell":
        used, reserved = Decimal(0), await reserved_for_sale(session, account.id, symbol.id)
    else:
        used, reserved = await margin_after(session, account, symbol, qty, held_now), 0
    return rules.assess(
        side,
        qty,
        symbol.ticker,
        price,
        cash=account.cash,
        margin_limit=account.margin_limit,
        margin_after=used,
        held=held,
        reserved=reserved,
    )


_NEW_ORDER_COLUMNS = (
    "account_id",
    "client_order_id",
    "symbol_id",
    "side",
    "order_type",
    "quantity",
    "limit_price",
)
_INSERT_OPEN = (  # the placeholders are not named as columns: SQLAlchemy's rule
    insert(Order)
    .values({name: bindparam(f"new_{name}") for name in _NEW_ORDER_COLUMNS})
    .values(status="open", filled_qty=0)
    .on_conflict_do_nothing(index_elements=["account_id", "client_order_id"])
    .returning(Order)
)


async def insert_open_order(session: AsyncSession, columns: dict[str, Any]) -> Order | None:
    """Insert a resting order (``columns``: the form's, as for
    :func:`services.orders.booking.place_filled`), unless the account has one with its
    ``client_order_id`` already: the row as stored (its id, its defaults), or None. No read
    after the write."""
    params = {f"new_{name}": columns[name] for name in _NEW_ORDER_COLUMNS}
    order: Order | None = await session.scalar(_INSERT_OPEN, params)
    return order


async def execute_fill(
    session: AsyncSession,
    account: Account,
    order: Order,
    symbol: Symbol,
    position: Position | None,
    price: Decimal,
) -> Position:
    """Fill all of a resting ``order`` at ``price``: order, fill, position and cash, in
    ``session`` (a marketable order is placed filled: :mod:`services.orders.booking`).

    The caller holds the order, account and position locks. Raises :class:`Rejected`
    (nothing changed) when cash or the position do not cover it.
    """
    qty, now = order.quantity, utc_now()
    booking = book_fill(account, position, symbol.ticker, order.side, qty, price)
    if position is None:
        position = Position(account_id=account.id, symbol_id=symbol.id)
    position.quantity, position.avg_cost = booking.quantity, booking.avg_cost
    position.realised_pnl, account.cash = booking.realised_pnl, booking.cash
    session.add(position)
    position.updated_at = account.updated_at = now
    for column, value in filled_columns(qty, price, now).items():
        setattr(order, column, value)
    session.add(Fill(order_id=order.id, quantity=qty, price=price, created_at=now))
    await session.flush()
    return position


def cancel(order: Order) -> None:
    """Mark an open order cancelled (the caller holds its row lock)."""
    order.status, order.updated_at = "cancelled", utc_now()


def reject(order: Order, reason: str) -> None:
    """Mark a stored order rejected (the venue's late checks)."""
    order.status, order.reject_reason, order.updated_at = "rejected", reason, utc_now()


def announce(session: AsyncSession, account_id: int, event: dict[str, Any]) -> None:
    """Stage ``orders.events.<account>`` in the order's own transaction (the outbox relay
    publishes it once committed: a NATS outage delays the event, never loses it)."""
    stage(session, wire.orders_events(account_id), event)
