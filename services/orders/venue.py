"""The simulated execution venue: resting limit orders fill on the first tick that crosses.

Per tick: one query over the partial index ``ix_orders_open_symbol`` (open orders on the
ticked symbols); each crossing order then fills in its own transaction, re-selected
``FOR UPDATE SKIP LOCKED`` with ``status = 'open'`` so it fills once even when several
orders-service processes see the same tick.

Only the replica holding the ``venue`` lease (in the orders service's lease bucket) runs
that query; the others skip ticks and only note the latest quotes. A replica that takes
the lease over matches once against those quotes, so an order that became marketable
while the role changed hands fills at once; ``SKIP LOCKED`` keeps fills exactly once
while two replicas briefly both believe they hold it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from prometheus_client import Histogram
from prometheus_client.core import Metric
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.orders import domain as rules
from services.orders.booking import order_event
from services.orders.execution import (
    announce,
    check_margin,
    execute_fill,
    lock_account,
    lock_position,
    reject,
)
from shared.db.models import Order, Symbol
from shared.leases import LeaderLease, LeaseStore
from shared.ticks import quotes_of_tick

__all__ = ["ORDER_METRICS", "VENUE_ROLE", "OrderMetrics", "Quote", "Venue", "quotes_of"]

VENUE_ROLE = "venue"  # the lease key, in the bucket wire.lease_bucket("orders")

log = logging.getLogger(__name__)

Quote = tuple[Decimal, Decimal]  # bid, ask

_ACK_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
_FILL_BUCKETS = (0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 14400.0)


class OrderMetrics:
    """How long a trader waits: for the answer to a submit, and for a resting order's fill.

    Exported by the orders app through its venue (:meth:`Venue.collect`).
    """

    def __init__(self) -> None:
        self.submit_ack = Histogram(
            "orders_submit_ack_seconds",
            "From a submit reaching the orders service to the start of its answer, by "
            "outcome (ok, refused: 4xx, error: 5xx).",
            ["outcome"],
            buckets=_ACK_BUCKETS,
            registry=None,
        )
        self.submit_to_fill = Histogram(
            "orders_submit_to_fill_seconds",
            "From a resting limit order's creation to its fill by the venue.",
            buckets=_FILL_BUCKETS,
            registry=None,
        )

    def answered(self, seconds: float, status: int) -> None:
        """An answer hook (:func:`shared.observability.when_answered`) for a submit."""
        outcome = "ok" if status < 400 else ("refused" if status < 500 else "error")
        self.submit_ack.labels(outcome).observe(seconds)

    def filled(self, created_at: datetime | None, filled_at: datetime | None) -> None:
        if created_at is not None and filled_at is not None:
            self.submit_to_fill.observe(max((filled_at - created_at).total_seconds(), 0.0))

    def collect(self) -> Iterator[Metric]:
        yield from self.submit_ack.collect()
        yield from self.submit_to_fill.collect()


ORDER_METRICS = OrderMetrics()  # the process's: the order component and the venue share it


def quotes_of(prices: Any) -> dict[str, Quote]:
    """``{TICKER: (bid, ask)}`` of the valid quotes in a tick's ``prices``
    (:func:`shared.ticks.quotes_of_tick`)."""
    return {ticker: (q.bid, q.ask) for ticker, q in quotes_of_tick(prices).items()}


class Venue:
    """Matches ticks against resting limit orders.

    ``db`` is read when a tick arrives (the app creates it in its lifespan); fills are
    announced through the outbox, which ``wake_outbox`` nudges after each commit. Without
    a lease (:meth:`hold_lease` not called: an in-memory bus) the venue always matches.
    ``queries`` counts the open-order queries run, ``skipped`` the ticks left to the
    lease holder. The venue is the collector of the orders latency series (``metrics``).
    """

    def __init__(
        self,
        db: Callable[[], async_sessionmaker[AsyncSession] | None],
        wake_outbox: Callable[[], None] = lambda: None,
        metrics: OrderMetrics = ORDER_METRICS,
    ) -> None:
        self._db, self._wake_outbox = db, wake_outbox
        self.metrics = metrics
        self.lease: LeaderLease | None = None
        self.queries = self.skipped = 0
        self._latest: dict[str, Quote] = {}
        self._latest_ts: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    def collect(self) -> Iterator[Metric]:
        """The orders latency series (the Prometheus collector protocol)."""
        return self.metrics.collect()

    @property
    def matching(self) -> bool:
        """Whether this replica runs the venue now."""
        return self.lease is None or self.lease.is_leader

    async def hold_lease(self, store: LeaseStore, replica: str | None = None) -> LeaderLease:
        """Run the venue only while holding its lease; the lease is started here and is
        the caller's to stop."""
        self.lease = LeaderLease(store, VENUE_ROLE, replica, on_gained=self._gained)
        await self.lease.start()
        return self.lease

    async def _gained(self, _epoch: int) -> None:
        log.info("venue: matching on this replica from now on")
        if self._latest:  # beside the lease's renewals, never in their way
            quotes, self._latest = self._latest, {}
            task = asyncio.create_task(self._catch_up(quotes, self._latest_ts))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def recheck(self, quotes: Mapping[str, Quote]) -> None:
        """Match ``quotes`` once more, beside the ticks: an order placed as resting was
        priced before a tick crossing it reached this process, and the venue may have read
        the open orders for that tick before the order committed. It fills at the latest
        quote rather than waiting for a tick that may never cross again. Any replica may
        ask: a fill takes the order's lock and finds it open, or leaves it."""
        task = asyncio.create_task(self._catch_up(dict(quotes), None))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _catch_up(self, quotes: dict[str, Quote], ts: Any) -> None:
        try:
            await self.match(quotes, ts)
        except Exception:
            log.exception("venue: matching the latest quotes failed")

    async def stop(self) -> None:
        """Cancel a takeover's matching still under way (the process is stopping)."""
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def on_tick(self, _subject: str, payload: dict[str, Any]) -> None:
        """The ``prices.ticks`` handler."""
        quotes = quotes_of(payload.get("prices"))
        if not self.matching:
            self._latest.update(quotes)
            self._latest_ts = payload.get("ts")
            self.skipped += 1
            return
        self._latest.clear()
        await self.match(quotes, payload.get("ts"))

    async def match(self, quotes: Mapping[str, Quote], ts: Any = None) -> list[int]:
        """Fill every open limit order the quotes cross; the ids of the orders filled."""
        sessions = self._db()
        if not quotes or sessions is None:
            return []
        self.queries += 1
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
            created_at, filled_at = order.created_at, order.updated_at
        self._wake_outbox()
        if event["status"] == "filled":
            self.metrics.filled(created_at, filled_at)
        return str(event["status"])
