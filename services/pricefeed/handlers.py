"""NATS handlers: an order event reloads that account's positions into the risk monitor."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pricefeed.monitor import Breach, RiskMonitor
from services.pricefeed.store import load_account
from shared import wire

__all__ = ["OrderEventsHandler"]

log = logging.getLogger(__name__)


class OrderEventsHandler:
    """``orders.events.<account_id>`` → reload the account (limit and positions) from the DB.

    Events are published after the orders service commits, so the reload sees the fill.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        monitor: RiskMonitor,
        on_breach: Callable[[Breach, float], None],
        wall_ms: Callable[[], float],
    ) -> None:
        self.sessions, self.monitor = sessions, monitor
        self.on_breach, self.wall_ms = on_breach, wall_ms

    async def __call__(self, subject: str, payload: dict[str, Any]) -> None:
        try:
            account_id = wire.account_of_subject(subject)
        except ValueError:
            log.warning("ignoring order event on %s", subject)
            return
        async with self.sessions() as session:
            row = await load_account(session, account_id)
        if row is None:
            log.warning("order event for unknown account %s", account_id)
            return
        breach = self.monitor.load_account(
            row.id, row.margin_limit, row.positions, self.monitor.level_of(row.id)
        )
        if breach is not None:
            self.on_breach(breach, self.wall_ms())
