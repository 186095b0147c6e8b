"""A fill's writes: what it does to the position and the cash (:func:`book_fill`), an
order's columns once filled and its event, and a marketable order placed filled in one
statement (:func:`place_filled`).

A market order (or a limit order that crosses) is filled as it is placed. Written through
the ORM that was five round trips after the order's own insert: the account, the fill, the
position and the outbox message, each a statement. :func:`place_filled` is one statement:
the order's insert, and reading what it returned, the fill, the position (inserted or
updated), the account's cash and the order's event in the outbox. If the account already has
an order with this client order id (committed while this request waited for the account's
lock), the insert returns no row, so nothing else is written and the answer is ``None``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, bindparam, func, literal_column, select, update
from sqlalchemy.dialects.postgresql import JSONB, insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased
from sqlalchemy.orm.attributes import set_committed_value

from services.orders import domain as rules
from shared import domain, wire
from shared.db.models import Account, Fill, Order, OutboxMessage, Position, Symbol
from shared.outbox import staged

__all__ = [
    "Booking",
    "book_fill",
    "filled_columns",
    "now_ms",
    "order_event",
    "place_filled",
    "utc_now",
]


def now_ms() -> float:
    """Event timestamps, like the ticks': epoch milliseconds."""
    return time.time() * 1000


def utc_now() -> datetime:
    return datetime.now(UTC)


def filled_columns(qty: int, price: Decimal, now: datetime) -> dict[str, Any]:
    """An order's columns once all ``qty`` of it filled at ``price``, at ``now``."""
    return {"status": "filled", "filled_qty": qty, "avg_fill_price": price, "updated_at": now}


def order_event(order: Order, ticker: str, ts: Any = None) -> dict[str, Any]:
    """The ``orders.events.<account>`` payload (DESIGN.md §3.2)."""
    price = order.avg_fill_price if order.status == "filled" else order.limit_price
    return {
        "order_id": order.id,
        "status": order.status,
        "symbol": ticker,
        "side": order.side,
        "qty": order.quantity,
        "price": str(price) if price is not None else None,
        "ts": ts if ts is not None else now_ms(),
    }


@dataclass(frozen=True, slots=True)
class Booking:
    """The position and the cash after one fill."""

    quantity: int
    avg_cost: Decimal
    realised_pnl: Decimal
    cash: Decimal


def book_fill(
    account: Account, position: Position | None, ticker: str, side: str, qty: int, price: Decimal
) -> Booking:
    """The fill of ``qty`` at ``price`` for ``account`` holding ``position``; raises
    :class:`~services.orders.domain.Rejected` when the cash or the position does not
    cover it (the caller holds the account's lock)."""
    held = position.quantity if position is not None else 0
    if side == "buy":
        rules.check_cash(qty, price, account.cash)
    else:
        rules.check_sell(ticker, qty, held)
    avg_cost = position.avg_cost if position is not None else Decimal(0)
    trade = domain.apply_fill(held, avg_cost, side, qty, price)
    realised = position.realised_pnl if position is not None else Decimal(0)
    return Booking(trade.qty, trade.avg_cost, realised + trade.realised, account.cash + trade.cash)


_ORDER_COLUMNS = (
    "account_id client_order_id symbol_id side order_type quantity limit_price"
    " status filled_qty avg_fill_price updated_at"
).split()


def _typed(name: str, column: Any) -> Any:
    return bindparam(name, type_=column.type)


def _statement() -> Select[Order]:
    """The order's insert and, from the row it returns, every other write of the fill;
    built once, run with its parameters (:func:`place_filled`)."""
    order = Order.__table__.c
    placed = (
        insert(Order)
        .values({name: bindparam(f"o_{name}") for name in _ORDER_COLUMNS})
        .on_conflict_do_nothing(index_elements=["account_id", "client_order_id"])
        .returning(*Order.__table__.c)
        .cte("placed")
    )
    at = _typed("at", order.updated_at)
    fill = insert(Fill).from_select(
        ["order_id", "quantity", "price", "created_at"],
        select(placed.c.id, placed.c.quantity, _typed("price", Fill.__table__.c.price), at),
    )
    pos = Position.__table__.c
    booked = insert(Position).from_select(
        ["account_id", "symbol_id", "quantity", "avg_cost", "realised_pnl", "updated_at"],
        select(
            placed.c.account_id,
            placed.c.symbol_id,
            _typed("p_quantity", pos.quantity),
            _typed("p_avg_cost", pos.avg_cost),
            _typed("p_realised_pnl", pos.realised_pnl),
            at,
        ),
    )
    excluded = booked.excluded
    booked = booked.on_conflict_do_update(
        index_elements=["account_id", "symbol_id"],
        set_={
            "quantity": excluded.quantity,
            "avg_cost": excluded.avg_cost,
            "realised_pnl": excluded.realised_pnl,
            "updated_at": excluded.updated_at,
        },
    )
    cash = (
        update(Account)
        .where(Account.id == placed.c.account_id)
        .values(cash=_typed("cash", Account.__table__.c.cash), updated_at=at)
    )
    outbox = OutboxMessage.__table__.c
    event = insert(OutboxMessage).from_select(
        ["subject", "payload", "request_id"],
        select(
            _typed("m_subject", outbox.subject),
            func.jsonb_set(
                bindparam("m_payload", type_=JSONB),
                literal_column("'{order_id}'::text[]"),
                func.to_jsonb(placed.c.id),
                type_=JSONB,
            ),
            _typed("m_request_id", outbox.request_id),
        ),
    )
    return select(aliased(Order, placed)).add_cte(
        fill.cte("fill"), booked.cte("booked"), cash.cte("cash"), event.cte("event")
    )


_PLACE_FILLED = _statement()


async def place_filled(
    session: AsyncSession,
    columns: dict[str, Any],
    account: Account,
    symbol: Symbol,
    position: Position | None,
    price: Decimal,
) -> Order | None:
    """Insert the order of ``columns`` filled at ``price``, and book it, with its event in
    the outbox: one round trip. ``None`` (nothing written) if the account already has an
    order with its client order id. Raises :class:`~services.orders.domain.Rejected`
    (nothing written) when the cash or the position does not cover it (:func:`book_fill`;
    the caller holds the account's lock)."""
    qty = columns["quantity"]
    booking = book_fill(account, position, symbol.ticker, columns["side"], qty, price)
    now = utc_now()
    filled = {**columns, **filled_columns(qty, price, now)}
    # the event's order_id is set in the statement, from the row inserted
    event = staged(wire.orders_events(account.id), order_event(Order(**filled), symbol.ticker))
    params = {f"o_{name}": filled[name] for name in _ORDER_COLUMNS}
    params.update(
        at=now,
        price=price,
        p_quantity=booking.quantity,
        p_avg_cost=booking.avg_cost,
        p_realised_pnl=booking.realised_pnl,
        cash=booking.cash,
        m_subject=event["subject"],
        m_payload=event["payload"],
        m_request_id=event["request_id"],
    )
    order: Order | None = await session.scalar(_PLACE_FILLED, params)
    if order is not None:  # the price as traded, as a venue fill keeps it (4 places stored)
        set_committed_value(order, "avg_fill_price", price)
    return order
