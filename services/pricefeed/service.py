"""The running pricefeed: built from the database snapshot, its loops started and stopped.

Every replica runs the same loops; only the leader (:mod:`services.pricefeed.leadership`)
ticks, alerts and writes. A standby follows the leader's ticks and alerts
(:mod:`services.pricefeed.follower`) and, on a takeover, continues the ``seq`` and the
simulated prices where the leader's last tick left them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pricefeed.domain import GbmSimulation, QuoteBoard
from services.pricefeed.follower import LeaderFollower
from services.pricefeed.handlers import OrderEventsHandler
from services.pricefeed.leadership import Leadership
from services.pricefeed.loop import Clock, PriceLoop, run_periodic, system_clock
from services.pricefeed.metrics import PricefeedMetrics
from services.pricefeed.monitor import Breach, RiskMonitor
from services.pricefeed.providers import HttpProvider, QuoteProvider, SimulationProvider
from services.pricefeed.settings import PricefeedSettings
from services.pricefeed.store import Snapshot, load_snapshot
from services.pricefeed.writers import AlertWriter, BatchWriter
from shared import wire
from shared.bus import MessageBus, Subscription
from shared.leases import LeaseStore, default_replica_id

__all__ = ["Pricefeed", "make_provider"]

log = logging.getLogger(__name__)


def make_provider(settings: PricefeedSettings, book: QuoteBoard) -> QuoteProvider:
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
    """The market data loop, the risk monitor, their writers and the order-event handler;
    leader or standby under ``leases`` (the pricefeed's lease bucket; ``None``: leads alone)."""

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
        leases: LeaseStore | None = None,
    ) -> None:
        self.settings, self.bus, self.metrics, self.clock = settings, bus, metrics, clock
        self.sessions = sessions
        self.leadership = Leadership(
            leases,
            settings.replica_id or default_replica_id(),
            on_lead=self._lead,
            on_follow=self._follow,
            warm=lambda: self.loop.seq > 0 or self.follower.last_seq > 0,
        )
        self.book = QuoteBoard(snapshot.symbols)
        self.monitor = RiskMonitor(
            self.book.last_prices(), {s.ticker: s.margin_rate for s in snapshot.symbols}
        )
        fence = self.leadership.fence
        self.batch = BatchWriter(
            sessions,
            self.monitor,
            metrics,
            fence,
            margin_interval_s=settings.margin_write_interval_s,
        )
        self.alerts = AlertWriter(sessions, bus, metrics, fence)
        self.follower = LeaderFollower(self.book, self.monitor, self.batch, metrics)
        self.provider = provider or make_provider(settings, self.book)
        self.loop = PriceLoop(
            provider=self.provider,
            book=self.book,
            monitor=self.monitor,
            bus=bus,
            metrics=metrics,
            on_changed=self.batch.add_prices,
            on_breach=self._on_breach,
            clock=clock,
            leader=self.leadership,
        )
        self.on_order_event = OrderEventsHandler(
            sessions, self.monitor, self._on_breach, clock.wall_ms
        )
        # breaches since the stored alert levels: alerted if this replica leads from start
        self._initial: list[Breach] = []
        for account in snapshot.accounts:
            breach = self.monitor.load_account(
                account.id,
                account.margin_limit,
                account.positions,
                account.stored_level,
                stored=True,
            )
            if breach is not None:
                self._initial.append(breach)
        self._tasks: list[asyncio.Task[None]] = []
        self._subscriptions: list[Subscription] = []

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
        leases: LeaseStore | None = None,
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
            leases=leases,
        )

    @property
    def replica(self) -> str:
        return self.leadership.replica

    def _on_breach(self, breach: Breach, ts_ms: float) -> None:
        if self.leadership.leading:
            self.alerts.submit(breach, ts_ms)
        else:
            self.follower.computed(breach)

    async def _on_tick(self, _subject: str, payload: dict[str, Any]) -> None:
        if self.leadership.leading or payload.get("src") == self.replica:
            return
        self.follower.on_tick(payload)

    async def _on_alert(self, subject: str, payload: dict[str, Any]) -> None:
        if self.leadership.leading:
            # its own alert, echoed back by NATS: its level may have cleared since, and
            # raising it again would hold back the next alert
            return
        self.follower.on_alert(subject, payload)

    async def _lead(self, epoch: int) -> None:
        """Become the leader: continue the standby's view of the leader's last tick. A
        cold replica (nothing followed: the first leader, or every warm one died) starts
        its ``seq`` at the tick clock (ticks since 1970), which no earlier leader on a
        synchronised clock can have passed: consumers never see a ``seq`` go back."""
        self.loop.seq = max(self.loop.seq, self.follower.last_seq)
        if self.loop.seq == 0:
            self.loop.seq = int(self.clock.wall_ms() // self.settings.tick_interval_ms)
        if isinstance(self.provider, SimulationProvider):
            self.provider.simulation.rebase(self.book.quotes)
        now = self.clock.wall_ms()
        for breach in [*self._initial, *self.follower.take_unalerted()]:
            self.alerts.submit(breach, now)
        self._initial = []
        self.metrics.leader.set(1)
        self.metrics.takeovers.inc()
        log.info("leading as %s from tick %d (epoch %d)", self.replica, self.loop.seq + 1, epoch)

    async def _follow(self) -> None:
        """No longer the leader: alert and write what is pending (fenced), then follow."""
        self.metrics.leader.set(0)
        await self.alerts.drain()
        await self.batch.flush(everything=True)

    async def _write_batch(self) -> None:
        if self.leadership.leading:
            await self.batch.flush()

    async def start(self) -> None:
        for subject, handler in (
            (wire.ORDERS_EVENTS_ALL, self.on_order_event),
            (wire.PRICES_TICKS, self._on_tick),
            (wire.RISK_BREACH_ALL, self._on_alert),
        ):
            self._subscriptions.append(await self.bus.subscribe(subject, handler))
        self._tasks = [
            asyncio.create_task(self.alerts.run(), name="pricefeed-alerts"),
            asyncio.create_task(
                run_periodic(
                    self.settings.db_write_interval_s,
                    self._write_batch,
                    clock=self.clock,
                    name="batched write",
                ),
                name="pricefeed-writer",
            ),
            asyncio.create_task(
                self.loop.run(self.settings.tick_interval_s), name="pricefeed-loop"
            ),
        ]
        await self.leadership.start()
        self._initial = []  # a standby leaves them to the leader
        self.bus.on_reconnect(self._reconnected)

    async def reload_accounts(self) -> None:
        """Every account's limit and positions again from PostgreSQL (after a NATS outage
        the order events published meanwhile are gone); alert levels continue."""
        async with self.sessions() as session:
            snapshot = await load_snapshot(session)
        now = self.clock.wall_ms()
        for account in snapshot.accounts:
            known = account.id in self.monitor.accounts  # its level is this process's own
            level = self.monitor.level_of(account.id) if known else account.stored_level
            breach = self.monitor.load_account(
                account.id, account.margin_limit, account.positions, level, stored=not known
            )
            if breach is not None:
                self._on_breach(breach, now)
        log.info("reloaded %d accounts after a NATS reconnect", len(snapshot.accounts))

    async def _reconnected(self) -> None:
        task = asyncio.create_task(self.reload_accounts(), name="pricefeed-reload")
        self._tasks.append(task)

    async def release(self) -> None:
        """Hand the feed to a standby (``POST /ops/release``, a pod's preStop): stop
        ticking, write what is pending, give the lease back; keep following as standby."""
        await self.leadership.step_down()

    async def stop(self) -> None:
        """Step down (alerts and the last batch written first), then stop the loops."""
        try:
            await self.leadership.step_down()
        finally:
            for sub in self._subscriptions:
                with contextlib.suppress(Exception):
                    await sub.unsubscribe()
            self._subscriptions = []
            for task in reversed(self._tasks):
                task.cancel()
            for task in self._tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            self._tasks = []
            await self.provider.aclose()
