"""How often a socket may get a frame, from how late this process runs.

Past what the machine can carry, sending every tick to every socket would only make every
frame later (the backlog grows in the NATS client and the loop). Instead, when the gateway
runs late the gateway sends each socket a frame at most every ``slow_interval_s`` (each
still holds the newest version of every element: nothing is lost but intermediate
values), and goes back to every tick once it keeps time again. Hysteresis keeps it from
flapping. Two measures of "late": the event loop's timers firing late, and a component's
"done with this tick" read long after its service sent it (the message's ``sent``). The
second catches a loop that keeps time but cannot read NATS fast enough: at 1,500 traders
on a saturated 2-core box the gateway read messages ~10 s late (megabytes queued in its
NATS socket) while its timers were 16 ms late. It was measured from the tick's own ``ts``
until 2026-12: that also counts the time the services take over a tick, which piles up
nowhere, and a gateway paced at 2 s (a pass over 2 s of ticks takes a while) looked late
for as long as it was paced.

Fewer frames alone do not drain that second backlog: what the gateway reads stays the
same. So while it reads ticks late it also asks the component services to update their
live instances at its slow frame interval (:func:`announce_forever`, ``gateway.pace``), or
slower while that is not enough, and lighter again once it has room (:class:`Asking`);
its own frames then keep the pace it asked.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from shared import wire

__all__ = ["Asking", "Pace", "announce_forever"]

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
        self.read_s = 0.0  # smoothed: how long after a service sent a tick's marker it was read
        self._reads = False  # a message said when it was sent
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

    def observe_read(self, delay_s: float) -> None:
        """How long after its service sent a component's "done" with a tick (the message's
        ``sent``) this gateway read it: the backlog in front of this gateway alone, apart
        from the time the services take over a tick."""
        self.read_s = 0.7 * self.read_s + 0.3 * max(0.0, delay_s)
        self._reads = True
        self._decide()

    def _decide(self) -> None:
        late = self.late_s
        if self.lag_s > self.slow_above_s or late > self.slow_age_above_s:
            self.interval_s = self.slow_interval_s
        elif self.lag_s < self.fast_below_s and late < self.fast_age_below_s:
            self.interval_s = self.base_interval_s

    @property
    def behind(self) -> bool:
        """Whether this gateway reads what the services send late: it reads NATS slower than
        they write, and what it has not read yet piles up (a late loop alone does not; nor
        do ticks the services took a while over, which pile up nowhere). Before any message
        said when it was sent, how old the ticks are when read stands in (:attr:`late_s`)."""
        return self.late_s > self.slow_age_above_s

    @property
    def late_s(self) -> float:
        """How late this gateway reads (:meth:`observe_read`), or before any message said
        when it was sent, how old the ticks are when read."""
        return self.read_s if self._reads else self.age_s

    async def run(self) -> None:
        """Probe the loop forever (cancel to stop)."""
        while True:
            started = self._clock()
            await asyncio.sleep(self.probe_s)
            self.observe(self._clock() - started - self.probe_s)


MAX_HOLD_S = 60.0  # the longest wait before trying a lighter pace again


class Asking:
    """The interval a gateway asks the services to keep, one decision per turn
    (:func:`announce_forever`).

    - **Slower while not enough.** The interval starts at the slow frame interval. If, once
      the services have had time to show its effect (as long as the reading is late, and a
      turn), this gateway still reads late and not a quarter less so, the interval doubles,
      up to :data:`~shared.wire.PACE_MAX_INTERVAL_S`.
    - **Lighter once it has room.** After reading with time to spare (under the pace's
      fast threshold, 0.25 s) for ``hold_s``, it tries half the interval, and so on down to
      none (every tick). So the pace follows the load down again instead of staying at the
      slowest an episode reached. In between the thresholds it holds.
    - **No flapping.** A try that makes it read late again is undone at once, and the next
      try waits twice as long (up to :data:`MAX_HOLD_S`); a try that holds resets the wait.
    """

    def __init__(self, pace: Pace, hold_s: float, every_s: float) -> None:
        self.pace, self.hold_s, self.every_s = pace, hold_s, every_s
        self.interval = 0.0  # asked now (0: every tick)
        self._changed = self._late_then = 0.0
        self._calm_since: float | None = None
        self._hold, self._trying = hold_s, False

    def turn(self, now: float) -> float:
        """The interval to ask from ``now`` on."""
        pace, late = self.pace, self.pace.late_s
        if pace.behind:
            self._calm_since = None
            if self._trying:  # the lighter pace was too light: back at once, and wait longer
                slower = min(2 * self.interval, wire.PACE_MAX_INTERVAL_S)
                self.interval = slower if self.interval > 0.0 else pace.slow_interval_s
                self._hold, self._trying = min(2 * self._hold, MAX_HOLD_S), False
                self._changed, self._late_then = now, late
            elif self.interval == 0.0:  # a new ask
                self.interval, self._changed, self._late_then = pace.slow_interval_s, now, late
            elif now - self._changed >= late + self.every_s and late > 0.75 * self._late_then:
                self.interval = min(2 * self.interval, wire.PACE_MAX_INTERVAL_S)
                self._changed, self._late_then = now, late
        elif late >= pace.fast_age_below_s:  # keeping up, without room to spare: hold
            self._calm_since = None
        elif self.interval > 0.0 or self._trying:
            if self._calm_since is None:
                self._calm_since = now
            elif now - self._calm_since >= (self.hold_s if self._trying else self._hold):
                if self._trying:  # the last try held: the next one as soon
                    self._hold, self._trying = self.hold_s, False
                if self.interval > 0.0:
                    half = self.interval / 2
                    self.interval = half if half >= pace.slow_interval_s else 0.0
                    self._trying, self._changed, self._calm_since = True, now, now
        return self.interval


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
    """While this gateway reads late (:attr:`Pace.behind`), ask the component services every
    ``every_s`` to update their pages no more often than an interval (``gateway.pace``,
    valid three times as long), as :class:`Asking` decides; once back to every tick, say
    so once (interval 0). The services cut their work with the gateway's, so the backlog
    drains instead of growing (:mod:`shared.components.pacing`). ``on_ask`` hears every
    interval said (for the metrics)."""
    asking, said = Asking(pace, hold_s, every_s), False
    while True:
        await asyncio.sleep(every_s)
        interval = asking.turn(clock())
        if interval == 0.0 and not said:
            continue
        try:
            await bus.publish(
                wire.GATEWAY_PACE, {"src": src, "interval": interval, "ttl": 3 * every_s}
            )
        except Exception:  # NATS away: the services forget the ask after its ttl
            log.warning("could not announce the gateway's pace", exc_info=True)
            continue
        said, pace.asked_s = interval > 0.0, interval
        if on_ask is not None:
            on_ask(interval)
