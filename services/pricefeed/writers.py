"""The background writers: batched price/margin updates and risk alerts.

They run beside the market data loop so a slow database never delays a tick. A failed
batch is kept and retried with the next one (newer values win).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pricefeed.domain import Quote
from services.pricefeed.metrics import PricefeedMetrics
from services.pricefeed.monitor import Breach, RiskMonitor
from services.pricefeed.store import insert_alert, write_margins, write_prices
from shared import wire
from shared.bus import MessageBus

__all__ = ["AlertWriter", "BatchWriter"]

log = logging.getLogger(__name__)


class BatchWriter:
    """Collects changed prices and margins; :meth:`flush` writes them in batched statements."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        monitor: RiskMonitor,
        metrics: PricefeedMetrics,
    ) -> None:
        self.sessions, self.monitor, self.metrics = sessions, monitor, metrics
        self._prices: dict[int, Quote] = {}
        self._margins: dict[int, Decimal] = {}

    def add_prices(self, quotes: Mapping[int, Quote]) -> None:
        self._prices.update(quotes)

    @property
    def pending(self) -> int:
        return len(self._prices) + len(self._margins)

    async def flush(self) -> None:
        prices, self._prices = self._prices, {}
        margins = self._margins | self.monitor.take_dirty()
        self._margins = {}
        if not prices and not margins:
            return
        try:
            async with self.sessions() as session, session.begin():
                if prices:
                    n = await write_prices(session, prices)
                    self.metrics.db_writes.labels("symbols").inc(n)
                if margins:
                    n = await write_margins(session, margins)
                    self.metrics.db_writes.labels("accounts").inc(n)
        except Exception:
            self.metrics.db_write_failures.inc()
            log.exception(
                "batched write of %d prices, %d margins failed", len(prices), len(margins)
            )
            self._prices = prices | self._prices
            self._margins = margins | self._margins


class AlertWriter:
    """Stores each breach as a risk alert, then publishes ``risk.breach.<account_id>``."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: MessageBus,
        metrics: PricefeedMetrics,
    ) -> None:
        self.sessions, self.bus, self.metrics = sessions, bus, metrics
        self.queue: asyncio.Queue[tuple[Breach, float]] = asyncio.Queue()

    def submit(self, breach: Breach, ts_ms: float) -> None:
        self.metrics.breaches.labels(breach.level).inc()
        self.queue.put_nowait((breach, ts_ms))

    async def handle(self, breach: Breach, ts_ms: float) -> None:
        log.info("risk breach: account %s %s", breach.account_id, breach.text)
        try:
            async with self.sessions() as session, session.begin():
                await insert_alert(session, breach)
        except Exception:  # the live alert still goes out; only its history row is lost
            log.exception("storing the risk alert of account %s failed", breach.account_id)
        await self.bus.publish(wire.risk_breach(breach.account_id), breach.payload(ts_ms))

    async def drain(self) -> None:
        """Handle everything queued so far (used on shutdown)."""
        while not self.queue.empty():
            await self.handle(*self.queue.get_nowait())

    async def run(self) -> None:
        while True:
            breach, ts_ms = await self.queue.get()
            try:
                await self.handle(breach, ts_ms)
            except Exception:
                log.exception("publishing the breach of account %s failed", breach.account_id)
