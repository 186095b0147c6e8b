"""How often a socket may get a frame, from how late this process's event loop runs.

Past what the machine can carry, sending every tick to every socket would only make every
frame later (the backlog grows in the NATS client and the loop). Instead, when the loop
runs late the gateway sends each socket a frame at most every ``slow_interval_s`` (each
still holds the newest version of every element: nothing is lost but intermediate
values), and goes back to every tick once the loop keeps time again. Hysteresis keeps it
from flapping.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["Pace"]


class Pace:
    def __init__(
        self,
        base_interval_s: float,
        slow_interval_s: float,
        *,
        probe_s: float = 0.1,
        slow_above_s: float = 0.08,
        fast_below_s: float = 0.02,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_interval_s = base_interval_s
        self.slow_interval_s = slow_interval_s
        self.interval_s = base_interval_s
        self.probe_s = probe_s
        self.slow_above_s = slow_above_s
        self.fast_below_s = fast_below_s
        self.lag_s = 0.0
        self._clock = clock

    @property
    def slowed(self) -> bool:
        return self.interval_s > self.base_interval_s

    def observe(self, lag_s: float) -> None:
        """One measurement of how late a timer fired; updates the smoothed lag and pace."""
        self.lag_s = 0.7 * self.lag_s + 0.3 * max(0.0, lag_s)
        if self.lag_s > self.slow_above_s:
            self.interval_s = self.slow_interval_s
        elif self.lag_s < self.fast_below_s:
            self.interval_s = self.base_interval_s

    async def run(self) -> None:
        """Probe the loop forever (cancel to stop)."""
        while True:
            started = self._clock()
            await asyncio.sleep(self.probe_s)
            self.observe(self._clock() - started - self.probe_s)
