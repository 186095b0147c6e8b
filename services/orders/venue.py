"""The simulated execution venue: resting limit orders fill on the first tick that crosses.

Per tick: one query over the partial index ``ix_orders_open_symbol`` (open orders on the
ticked symbols); each crossing order then fills in its own transaction, re-selected
``FOR UPDATE SKIP LOCKED`` with ``status = 'open'`` so it fills once even when several
orders-service processes see the same tick.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.orders import domain as rules
from services.orders.execution import (
    announce,
    check_margin,
    execute_fill,
    lock_account,
    lock_position,
    order_event,
    reject,
)
from shared.db.models import Order, Symbol
from shared.ticks import tick_field

__all__ = ["Quote", "Venue", "quotes_of"]

log = logging.getLogger(__name__)

Quote = tuple[Decimal, Decimal]  # bid, ask


def quotes_of(prices: Any) -> dict[str, Quote]:
    """``{TICKER: (bid, ask)}`` from a tick's ``prices``; malformed entries are skipped."""
    quotes: dict[str, Quote] = {}
    if not isinstance(prices, Mapping):
        return quotes
    for ticker, quote in prices.items():
        try:
            bid, ask = tick_field(quote, "bid"), tick_field(quote, "ask")
        except (KeyError, ArithmeticError, TypeError, ValueError):
            continue
        if bid.is_finite() and ask.is_finite() and 0 < bid <= ask:
            quotes[str(ticker)] = (bid, ask)
    return quotes


class Venue:
    """Matches ticks against resting limit orders.

    ``db`` is read when a tick arrives (the app creates it in its lifespan); fills are
    announced through the outbox, which ``wake_outbox`` nudges after each commit.
    """

    def __init__(
        self,
        db: Callable[[], async_sessionmaker[AsyncSession] | None],
        wake_outbox: Callable[[], None] = lambda: None,
    ) -> None:
        self._db, self._wake_outbox = db, wake_outbox

    async def on_tick(self, _subject: str, payload: dict[str, Any]) -> None:
        """The ``prices.ticks`` handler."""
        await self.match(quotes_of(payload.get("prices")), payload.get("ts"))

    async def match(self, quotes: Mapping[str, Quote], ts: Any = None) -> list[int]:
        """Fill every open limit order the quotes cross; the ids of the orders filled."""
        sessions = self._db()
        if not quotes or sessions is None:
            return []
        async with sessions() as session:
            rows = (
                await session.execute(
                    select(Order.id, Order.side, Order.limit_price, Symbol.ticker)
                    .join(Symbol, Order.symbol_id == Symbol.id)
                    .where(Order.status == "open", Symbol.ticker.in_(list(quotes)))
                    .order_by(Order.id)
                )
            ).all()
        filled: list[int] = []
        for order_id, side, limit_price, ticker in rows:
            bid, ask = quotes[ticker]
            if limit_price is None or not rules.crosses(side, limit_price, bid, ask):
                continue
            try:
                status = await self._execute(sessions, order_id, bid, ask, ts)
            except Exception:
                log.exception("venue: filling order %s failed", order_id)
                continue
            if status == "filled":
                filled.append(order_id)
        return filled

    async def _execute(
        self,
        sessions: async_sessionmaker[AsyncSession],
        order_id: int,
        bid: Decimal,
        ask: Decimal,
        ts: Any,
    ) -> str | None:
        async with sessions() as session, session.begin():
            order = await session.scalar(
                select(Order)
                .where(Order.id == order_id, Order.status == "open")
                .with_for_update(skip_locked=True)
                .execution_options(populate_existing=True)
            )
            if order is None:  # filled, cancelled, or being handled by another process
                return None
            account = await lock_account(session, order.account_id)
            symbol = await session.get_one(Symbol, order.symbol_id)
            position = await lock_position(session, account.id, symbol.id)
            price = rules.touch_price(order.side, bid, ask)
            try:
                if order.side == "buy":
                    await check_margin(session, account, symbol, order.quantity)
                await execute_fill(session, account, order, symbol, position, price)
            except rules.Rejected as exc:
                reject(order, exc.reason)
            event = order_event(order, symbol.ticker, ts)
            announce(session, account.id, event)
        self._wake_outbox()
        return str(event["status"])
