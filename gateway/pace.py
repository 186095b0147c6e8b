"""How often a socket may get a frame, from how late this process runs.

Past what the machine can carry, sending every tick to every socket would only make every
frame later (the backlog grows in the NATS client and the loop). Instead, when the gateway
runs late the gateway sends each socket a frame at most every ``slow_interval_s`` (each
still holds the newest version of every element: nothing is lost but intermediate
values), and goes back to every tick once it keeps time again. Hysteresis keeps it from
flapping. Two measures of "late": the event loop's timers firing late, and ticks already
old when a component's "done with this tick" reaches the gateway. The second catches a
loop that keeps time but cannot read NATS fast enough: at 1,500 traders on a saturated
2-core box the gateway read messages ~10 s late (megabytes queued in its NATS socket)
while its timers were 16 ms late.

Fewer frames alone do not drain that second backlog: what the gateway reads stays the
same. So while it reads ticks late it also asks the component services to update their
live instances at its slow frame interval (:func:`announce_forever`, ``gateway.pace``), or
slower while that is not enough; its own frames then keep the pace it asked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from shared import wire

__all__ = ["Pace", "announce_forever"]

log = logging.getLogger(__name__)


class Pace:
    def __init__(
        self,
        base_interval_s: float,
        slow_interval_s: float,
        *,
        probe_s: float = 0.1,
        slow_above_s: float = 0.08,
        fast_below_s: float = 0.02,
        slow_age_above_s: float = 0.5,
        fast_age_below_s: float = 0.25,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_interval_s = base_interval_s
        self.slow_interval_s = slow_interval_s
        self.interval_s = base_interval_s
        self.probe_s = probe_s
        self.slow_above_s = slow_above_s
        self.fast_below_s = fast_below_s
        self.slow_age_above_s = slow_age_above_s
        self.fast_age_below_s = fast_age_below_s
        self.lag_s = 0.0
        self.age_s = 0.0
        self.asked_s = 0.0  # the pace asked of the services (:func:`announce_forever`)
        self._clock = clock

    @property
    def slowed(self) -> bool:
        return self.frame_s > self.base_interval_s

    @property
    def frame_s(self) -> float:
        """The least time between two frames to one socket: never shorter than the pace
        asked of the services (a pass every 2 s makes one frame per socket, not one per
        component's pass)."""
        return max(self.interval_s, self.asked_s)

    def observe(self, lag_s: float) -> None:
        """One measurement of how late a timer fired; updates the smoothed lag and pace."""
        self.lag_s = 0.7 * self.lag_s + 0.3 * max(0.0, lag_s)
        self._decide()

    def observe_age(self, age_s: float) -> None:
        """How old a tick was when a component's "done" with it reached the gateway (the
        pricefeed's ``ts`` against this process's clock, kept in step by NTP); updates the
        smoothed age and pace."""
        self.age_s = 0.7 * self.age_s + 0.3 * max(0.0, age_s)
        self._decide()

    def _decide(self) -> None:
        if self.lag_s > self.slow_above_s or self.age_s > self.slow_age_above_s:
            self.interval_s = self.slow_interval_s
        elif self.lag_s < self.fast_below_s and self.age_s < self.fast_age_below_s:
            self.interval_s = self.base_interval_s

    @property
    def behind(self) -> bool:
        """Whether this gateway reads the ticks late: it reads NATS slower than the services
        write, and what it has not read yet piles up (a late loop alone does not)."""
        return self.age_s > self.slow_age_above_s

    async def run(self) -> None:
        """Probe the loop forever (cancel to stop)."""
        while True:
            started = self._clock()
            await asyncio.sleep(self.probe_s)
            self.observe(self._clock() - started - self.probe_s)


async def announce_forever(
    pace: Pace,
    bus: Any,
    src: str,
    *,
    every_s: float = 1.0,
    hold_s: float = 5.0,
    clock: Callable[[], float] = time.monotonic,
    on_ask: Callable[[float], None] | None = None,
) -> None:
    """While this gateway reads the ticks late (:attr:`Pace.behind`) and for ``hold_s``
    after, ask the component services every ``every_s`` to update their pages no more
    often than an interval (``gateway.pace``, valid three times as long); then say it is
    back (interval 0). The services cut their work with the gateway's, so the backlog
    drains instead of growing (:mod:`shared.components.pacing`); the hold keeps the
    services' lighter load from ending the ask at once.

    The interval starts at the slow frame interval. If, once the services have had time
    to show its effect (as long as the ticks' lateness, and a turn), the ticks are still
    late and not a quarter less late than when it was asked, that pace is still more than
    this machine can carry: the interval doubles, up to
    :data:`~shared.wire.PACE_MAX_INTERVAL_S`, and stays until the ask ends. ``on_ask``
    hears every interval said (for the metrics)."""
    said, until = False, float("-inf")
    interval, changed, age_then = pace.slow_interval_s, 0.0, 0.0
    while True:
        await asyncio.sleep(every_s)
        now = clock()
        if pace.behind:
            if now >= until:  # a new ask
                interval, changed, age_then = pace.slow_interval_s, now, pace.age_s
            elif now - changed >= pace.age_s + every_s and pace.age_s > 0.75 * age_then:
                interval = min(2 * interval, wire.PACE_MAX_INTERVAL_S)
                changed, age_then = now, pace.age_s
            until = now + hold_s
        asking = now < until
        if not asking:
            interval = pace.slow_interval_s
            if not said:
                continue
        ask = interval if asking else 0.0
        try:
            await bus.publish(wire.GATEWAY_PACE, {"src": src, "interval": ask, "ttl": 3 * every_s})
        except Exception:  # NATS away: the services forget the ask after its ttl
            log.warning("could not announce the gateway's pace", exc_info=True)
            continue
        said, pace.asked_s = asking, ask
        if on_ask is not None:
            on_ask(ask)
