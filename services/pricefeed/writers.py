"""The background writers: batched price/margin updates and risk alerts.

They run beside the market data loop so a slow database never delays a tick. A failed
batch is kept and retried with the next one (newer values win). Each transaction first
runs the ``fence`` (the leader claims its epoch, :mod:`shared.db.fencing`): a deposed
leader's write is refused and changes nothing, and its alert is not published.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from decimal import Decimal

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pricefeed.domain import Quote
from services.pricefeed.metrics import PricefeedMetrics
from services.pricefeed.monitor import Breach, RiskMonitor
from services.pricefeed.store import insert_alert, write_margins, write_prices
from shared import wire
from shared.bus import MessageBus
from shared.db.fencing import StaleEpoch

__all__ = ["AlertWriter", "BatchWriter", "Fence"]

log = logging.getLogger(__name__)

Fence = Callable[[AsyncSession], Awaitable[None]]


class BatchWriter:
    """Collects changed prices and margins; :meth:`flush` writes them in batched statements."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        monitor: RiskMonitor,
        metrics: PricefeedMetrics,
        fence: Fence | None = None,
        *,
        margin_interval_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sessions, self.monitor, self.metrics = sessions, monitor, metrics
        self.fence = fence
        # accounts.margin_used is for operators (nothing in the services reads it): written
        # at most this often; at 100,000 accounts each write costs PostgreSQL about a second
        self.margin_interval_s, self._clock = margin_interval_s, clock
        self._margins_written = -math.inf
        self._prices: dict[int, Quote] = {}
        self._margins: dict[int, Decimal] = {}
        self._lock = asyncio.Lock()  # batches commit in order: newer values land last

    def add_prices(self, quotes: Mapping[int, Quote]) -> None:
        self._prices.update(quotes)

    @property
    def pending(self) -> int:
        return len(self._prices) + len(self._margins)

    async def flush(self, *, everything: bool = False) -> None:
        """Write the changed prices, and the changed margins if they are due (or
        ``everything``: on handing leadership over)."""
        async with self._lock:
            await self._flush(everything)

    async def _flush(self, everything: bool) -> None:
        prices, self._prices = self._prices, {}
        now = self._clock()
        if everything or now - self._margins_written >= self.margin_interval_s:
            margins = self._margins | self.monitor.take_dirty()
            self._margins, self._margins_written = {}, now
        else:
            margins = {}
        if not prices and not margins:
            return
        try:
            async with self.sessions() as session, session.begin():
                if self.fence is not None:
                    await self.fence(session)
                if prices:
                    n = await write_prices(session, prices)
                    self.metrics.db_writes.labels("symbols").inc(n)
                if margins:
                    n = await write_margins(session, margins)
                    self.metrics.db_writes.labels("accounts").inc(n)
        except Exception as exc:
            # kept either way: a deposed leader that leads again later writes them then
            self._prices = prices | self._prices
            self._margins = margins | self._margins
            if isinstance(exc, StaleEpoch):
                self.metrics.fenced_writes.labels("batch").inc()
                log.warning("batched write refused: %s", exc)
                return
            self.metrics.db_write_failures.inc()
            log.exception(
                "batched write of %d prices, %d margins failed", len(prices), len(margins)
            )


class AlertWriter:
    """Stores each breach as a risk alert, then publishes ``risk.breach.<account_id>``."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        bus: MessageBus,
        metrics: PricefeedMetrics,
        fence: Fence | None = None,
    ) -> None:
        self.sessions, self.bus, self.metrics = sessions, bus, metrics
        self.fence = fence
        self.queue: asyncio.Queue[tuple[Breach, float]] = asyncio.Queue()

    def submit(self, breach: Breach, ts_ms: float) -> None:
        self.metrics.breaches.labels(breach.level).inc()
        self.queue.put_nowait((breach, ts_ms))

    async def handle(self, breach: Breach, ts_ms: float) -> None:
        log.info("risk breach: account %s %s", breach.account_id, breach.text)
        try:
            async with self.sessions() as session, session.begin():
                if self.fence is not None:
                    await self.fence(session)
                await insert_alert(session, breach, ts_ms)
        except StaleEpoch as exc:  # a newer leader alerts; this one is deposed
            self.metrics.fenced_writes.labels("alert").inc()
            log.warning("risk alert of account %s dropped: %s", breach.account_id, exc)
            return
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
