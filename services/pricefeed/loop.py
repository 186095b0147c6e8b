"""The market data cycle and the monotonic scheduler that runs it.

The scheduler keeps cycles on a fixed grid ``start + k × interval`` of a monotonic clock:
a slow cycle is measured and logged and the grid slots it overran are skipped, so lateness
never accumulates into drift.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from services.pricefeed.domain import QuoteBoard, tick_payload
from services.pricefeed.metrics import PricefeedMetrics
from services.pricefeed.monitor import Breach, RiskMonitor
from services.pricefeed.providers import QuoteProvider
from shared import wire
from shared.bus import MessageBus

__all__ = ["Clock", "CycleResult", "Leader", "PriceLoop", "run_periodic", "system_clock"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Clock:
    """Monotonic time for scheduling, wall time for timestamps, and sleep."""

    monotonic: Callable[[], float]
    wall_ms: Callable[[], float]
    sleep: Callable[[float], Awaitable[Any]]


system_clock = Clock(time.monotonic, lambda: time.time() * 1000, asyncio.sleep)


async def run_periodic(
    interval_s: float,
    step: Callable[[], Awaitable[object]],
    *,
    clock: Clock = system_clock,
    name: str = "cycle",
    on_overrun: Callable[[float, int], None] | None = None,
) -> None:
    """Run ``step`` every ``interval_s`` on the monotonic grid, forever; ``step`` may fail."""
    next_at = clock.monotonic()
    while True:
        started = clock.monotonic()
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("%s failed; continuing", name)
        now = clock.monotonic()
        next_at += interval_s
        if now > next_at:
            missed = int((now - next_at) // interval_s) + 1
            next_at += missed * interval_s
            log.warning(
                "%s took %.1f ms (interval %.1f ms); skipping %d slot(s)",
                name,
                (now - started) * 1000,
                interval_s * 1000,
                missed,
            )
            if on_overrun is not None:
                on_overrun(now - started, missed)
        await clock.sleep(next_at - now)


class Leader(Protocol):
    """Whether this replica may tick now, and what it stamps its ticks with."""

    replica: str
    epoch: int | None

    @property
    def leading(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class CycleResult:
    seq: int | None
    changed: int
    breaches: list[Breach]
    stale: bool


class PriceLoop:
    """One cycle: fetch quotes, publish the changed ones, feed the risk monitor.

    With a ``leader``, a cycle does nothing unless this replica leads, and each tick
    names its publisher (``src``) and the leader's ``epoch``.
    """

    def __init__(
        self,
        *,
        provider: QuoteProvider,
        book: QuoteBoard,
        monitor: RiskMonitor,
        bus: MessageBus,
        metrics: PricefeedMetrics,
        on_changed: Callable[[dict[int, Any]], None] | None = None,
        on_breach: Callable[[Breach, float], None] | None = None,
        clock: Clock = system_clock,
        leader: Leader | None = None,
    ) -> None:
        self.provider, self.book, self.monitor, self.bus = provider, book, monitor, bus
        self.metrics, self.clock, self.leader = metrics, clock, leader
        self.on_changed, self.on_breach = on_changed, on_breach
        self.prev_close = {t: s.prev_close for t, s in book.symbols.items()}
        self.seq = 0

    def _standing_by(self) -> bool:
        return self.leader is not None and not self.leader.leading

    async def cycle(self) -> CycleResult:
        if self._standing_by():
            return CycleResult(None, 0, [], False)
        started = self.clock.monotonic()
        try:
            quotes = await self.provider.fetch()
        except Exception as exc:  # any provider failure: keep last prices, mark stale
            self.metrics.provider_failures.labels(self.provider.name).inc()
            if self.book.mark_stale():
                log.warning("quote provider failed (%s); keeping last prices, marked stale", exc)
            self.metrics.stale.set(1)
            self.metrics.cycle_seconds.observe(self.clock.monotonic() - started)
            return CycleResult(None, 0, [], True)
        if self._standing_by():  # lost the lease while fetching: the new leader ticks
            return CycleResult(None, 0, [], False)
        was_stale = self.book.stale
        changed = self.book.apply(quotes)
        if was_stale:
            log.info("quote provider recovered; prices are live again")
            self.metrics.stale.set(0)
        seq, breaches = None, []
        if changed:
            self.seq = seq = self.seq + 1
            ts = self.clock.wall_ms()
            payload = tick_payload(seq, ts, changed, self.prev_close, **self._stamp())
            try:
                await self.bus.publish(wire.PRICES_TICKS, payload)
                self.metrics.ticks.inc()
            except Exception:  # the book and the monitor still advance; consumers see a gap
                self.metrics.publish_failures.inc()
                log.exception("publishing tick %d failed", seq)
            if self.on_changed is not None:
                symbols = self.book.symbols
                self.on_changed({symbols[t].id: q for t, q in changed.items()})
            breaches = self.monitor.on_prices({t: q.last for t, q in changed.items()})
            for breach in breaches:
                if self.on_breach is not None:
                    self.on_breach(breach, ts)
        self.metrics.symbols_per_tick.observe(len(changed))
        self.metrics.cycle_seconds.observe(self.clock.monotonic() - started)
        return CycleResult(seq, len(changed), breaches, False)

    def _stamp(self) -> dict[str, Any]:
        if self.leader is None:
            return {}
        return {"src": self.leader.replica, "epoch": self.leader.epoch}

    def _overrun(self, _took: float, missed: int) -> None:
        self.metrics.slow_cycles.inc()
        self.metrics.missed_ticks.inc(missed)

    async def run(self, interval_s: float) -> None:
        await run_periodic(
            interval_s, self.cycle, clock=self.clock, name="price cycle", on_overrun=self._overrun
        )
