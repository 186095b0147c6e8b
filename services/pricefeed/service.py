"""The running pricefeed: built from the database snapshot, its loops started and stopped."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pricefeed.domain import GbmSimulation, PriceBook
from services.pricefeed.handlers import OrderEventsHandler
from services.pricefeed.loop import Clock, PriceLoop, run_periodic, system_clock
from services.pricefeed.metrics import PricefeedMetrics
from services.pricefeed.monitor import RiskMonitor
from services.pricefeed.providers import HttpProvider, QuoteProvider, SimulationProvider
from services.pricefeed.settings import PricefeedSettings
from services.pricefeed.store import Snapshot, load_snapshot
from services.pricefeed.writers import AlertWriter, BatchWriter
from shared import wire
from shared.bus import MessageBus, Subscription

__all__ = ["Pricefeed", "make_provider"]

log = logging.getLogger(__name__)


def make_provider(settings: PricefeedSettings, book: PriceBook) -> QuoteProvider:
    if settings.provider == "http":
        return HttpProvider(
            settings.http_url,
            book.symbols,
            timeout_s=settings.http_timeout_s,
            retries=settings.http_retries,
            backoff_s=settings.http_backoff_s,
        )
    seed = settings.seed if settings.seed is not None else secrets.randbits(32)
    log.info("simulation seed %d (set PRICEFEED_SEED=%d to replay)", seed, seed)
    simulation = GbmSimulation(book.last_prices(), seed=seed, day_seconds=settings.sim_day_seconds)
    return SimulationProvider(simulation, settings.tick_interval_s)


class Pricefeed:
    """The market data loop, the risk monitor, their writers and the order-event handler."""

    def __init__(
        self,
        settings: PricefeedSettings,
        snapshot: Snapshot,
        *,
        bus: MessageBus,
        sessions: async_sessionmaker[AsyncSession],
        metrics: PricefeedMetrics,
        provider: QuoteProvider | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self.settings, self.bus, self.metrics, self.clock = settings, bus, metrics, clock
        self.book = PriceBook(snapshot.symbols)
        self.monitor = RiskMonitor(
            self.book.last_prices(), {s.ticker: s.margin_rate for s in snapshot.symbols}
        )
        self.batch = BatchWriter(sessions, self.monitor, metrics)
        self.alerts = AlertWriter(sessions, bus, metrics)
        self.provider = provider or make_provider(settings, self.book)
        self.loop = PriceLoop(
            provider=self.provider,
            book=self.book,
            monitor=self.monitor,
            bus=bus,
            metrics=metrics,
            on_changed=self.batch.add_prices,
            on_breach=self.alerts.submit,
            clock=clock,
        )
        self.on_order_event = OrderEventsHandler(
            sessions, self.monitor, self.alerts.submit, clock.wall_ms
        )
        now = clock.wall_ms()
        for account in snapshot.accounts:
            breach = self.monitor.load_account(
                account.id, account.margin_limit, account.positions, account.stored_level
            )
            if breach is not None:
                self.alerts.submit(breach, now)
        self._tasks: list[asyncio.Task[None]] = []
        self._subscription: Subscription | None = None

    @classmethod
    async def load(
        cls,
        settings: PricefeedSettings,
        *,
        bus: MessageBus,
        sessions: async_sessionmaker[AsyncSession],
        metrics: PricefeedMetrics,
        provider: QuoteProvider | None = None,
        clock: Clock = system_clock,
    ) -> Pricefeed:
        async with sessions() as session:
            snapshot = await load_snapshot(session)
        log.info("loaded %d symbols, %d accounts", len(snapshot.symbols), len(snapshot.accounts))
        return cls(
            settings,
            snapshot,
            bus=bus,
            sessions=sessions,
            metrics=metrics,
            provider=provider,
            clock=clock,
        )

    async def start(self) -> None:
        self._subscription = await self.bus.subscribe(wire.ORDERS_EVENTS_ALL, self.on_order_event)
        self._tasks = [
            asyncio.create_task(self.alerts.run(), name="pricefeed-alerts"),
            asyncio.create_task(
                run_periodic(
                    self.settings.db_write_interval_s,
                    self.batch.flush,
                    clock=self.clock,
                    name="batched write",
                ),
                name="pricefeed-writer",
            ),
            asyncio.create_task(
                self.loop.run(self.settings.tick_interval_s), name="pricefeed-loop"
            ),
        ]

    async def stop(self) -> None:
        """Stop the loops, then write what is pending (alerts first, then the last batch)."""
        if self._subscription is not None:
            await self._subscription.unsubscribe()
        for task in reversed(self._tasks):
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        try:
            await self.alerts.drain()
            await self.batch.flush()
        finally:
            await self.provider.aclose()
