"""How often the gateways can take a service's live updates (``gateway.pace``).

A gateway that cannot keep up with the ticks (its event loop late, or ticks already old
when it reads them: it reads NATS slower than the services write) says so every second,
with the interval it sends each page a frame at. Each tick-driven service then brings
its live instances up to date at most that often, the ticks in between merged into the
next pass (each page still gets the newest value of everything): the whole live path
does less until the gateway keeps time again, instead of a backlog growing in the
gateway's NATS connection until nats-server drops it as a slow consumer. A gateway that
stops saying so (recovered, or gone) is forgotten after the ``ttl`` it gave; the slowest
gateway heard from sets the pace.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from shared import wire

__all__ = ["MAX_INTERVAL_S", "MAX_TTL_S", "GatewayPace"]

MAX_INTERVAL_S = wire.PACE_MAX_INTERVAL_S  # never slower than this, whatever a gateway asks
MAX_TTL_S = 10.0


def _seconds(value: Any, ceiling: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0.0
    return min(max(float(value), 0.0), ceiling)


class GatewayPace:
    """The interval between two live passes that the slowest gateway heard from asks for."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._asks: dict[str, tuple[float, float]] = {}  # gateway → (interval, until)

    async def on_pace(self, _subject: str, payload: dict[str, Any]) -> None:
        """A ``gateway.pace`` message: ``{src, interval, ttl}``."""
        src = str(payload.get("src", ""))[:64]
        interval = _seconds(payload.get("interval"), MAX_INTERVAL_S)
        if interval <= 0:
            self._asks.pop(src, None)
            return
        ttl = _seconds(payload.get("ttl"), MAX_TTL_S)
        self._asks[src] = (interval, self._clock() + ttl)

    def interval(self) -> float:
        """Seconds a pass should take at least (0: every tick)."""
        if not self._asks:
            return 0.0
        now = self._clock()
        for src in [s for s, (_i, until) in self._asks.items() if until <= now]:
            del self._asks[src]
        return max((interval for interval, _until in self._asks.values()), default=0.0)
