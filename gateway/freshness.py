"""What the page says about the freshness of its numbers, rendered by the gateway.

The gateway sees every component's "done with tick N" message, so it knows when prices
last moved through each component, how old the tick it finished was, and whether it is
itself slowing frames down
(:class:`~gateway.pace.Pace`). :meth:`Freshness.element` renders ``#feed-status`` for the
page header: "prices live", or "delayed — last update hh:mm:ss UTC" with the panels that
stopped following ticks. It is sent to every socket when its text changes, to a socket
that connects, and to any socket that got no frame for ``KEEPALIVE_S`` (so the page can
tell a quiet market from a dead link: app.js marks the badge "stale" after 5 s of
silence).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime

from markupsafe import escape

from gateway.pace import Pace

__all__ = ["FEED_STATUS_ID", "KEEPALIVE_S", "Freshness", "panel_status_id"]

FEED_STATUS_ID = "feed-status"
KEEPALIVE_S = 2.0
STALE_AFTER_S = 2.0  # eight ticks without news from a component: its panel is delayed
_LABELS = {
    "portfolio": "portfolio",
    "watchlist": "watchlist",
    "risk_metrics": "risk",
    "order": "orders",
}


def panel_status_id(component: str) -> str:
    """The id of a panel's freshness line, in the page's slot for that component."""
    return f"freshness-{component}"


def _feed_status(state: str, text: str) -> str:
    return (
        f'<span id="{FEED_STATUS_ID}" hx-swap-oob="true" class="feed feed--{state}" '
        f'role="status" aria-live="polite" data-state="{state}">{escape(text)}</span>'
    )


def _moment(ts_ms: float | None) -> str:
    if ts_ms is None:
        return ""
    return f" — last update {datetime.fromtimestamp(ts_ms / 1000, UTC):%H:%M:%S} UTC"


class Freshness:
    def __init__(
        self,
        pace: Pace,
        *,
        stale_after_s: float = STALE_AFTER_S,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], float] = lambda: time.time() * 1000,
        connected: Callable[[], bool] = lambda: True,
    ) -> None:
        self._pace = pace
        self._stale_after_s = stale_after_s
        self._clock = clock
        self._wall_ms = wall_ms  # the pricefeed's ``ts`` is wall-clock epoch milliseconds
        self.connected = connected
        self._last: dict[str, tuple[float, float | None]] = {}  # component → (when, tick ts)
        self.unreachable: set[str] = set()  # components whose service did not answer
        self.watched: set[str] = set()  # components whose service the gateway checks

    def tick_done(self, component: str, ts_ms: float | None) -> None:
        """A component finished a tick whose timestamp is ``ts_ms``."""
        self._last[component] = (self._clock(), ts_ms)

    def delayed(self) -> list[str]:
        """The components that stopped following ticks (all of them without NATS): no tick
        finished for ``stale_after_s``, or the last one finished was already that old
        (the numbers are behind the feed: a service or this gateway works through a
        backlog on an overloaded machine, and what it shows is seconds old)."""
        if not self.connected():
            return sorted(set(self._last) | self.unreachable)
        now, wall_ms = self._clock(), self._wall_ms()
        stale_ms = self._stale_after_s * 1000
        late = {
            c
            for c, (at, ts) in self._last.items()
            if now - at > self._stale_after_s or (ts is not None and wall_ms - ts > stale_ms)
        }
        return sorted(late | self.unreachable)

    def waiting(self) -> str:
        """``#feed-status`` for a page whose live components are not in yet."""
        return _feed_status("waiting", "waiting for prices")

    def element(self) -> str:
        """``#feed-status`` as an out-of-band element."""
        if not self.connected():
            stamps = [ts for _at, ts in self._last.values() if ts is not None]
            state = "delayed"
            text = "delayed — no connection to the price feed" + _moment(max(stamps, default=None))
        elif not self._last:
            state, text = "waiting", "waiting for prices"
        else:
            late = self.delayed()
            if late:
                stamps = [ts for c in late if c in self._last and (ts := self._last[c][1])]
                text = "delayed (" + ", ".join(_LABELS.get(c, c) for c in late) + ")"
                text += _moment(min(stamps, default=None))
                state = "delayed"
            elif self._pace.slowed:
                state, text = "delayed", "delayed — the server is busy: fewer updates"
            else:
                state, text = "live", "prices live"
        return _feed_status(state, text)

    def panel(self, component: str) -> str:
        """A panel's freshness line: hidden while its numbers follow the feed, "delayed —
        last update hh:mm:ss UTC" once its service stopped finishing ticks, "service
        unreachable" while its service does not answer the gateway."""
        pid = panel_status_id(component)
        if component in self.unreachable:
            text = "delayed — service unreachable"
            if component in self._last:
                text += _moment(self._last[component][1]).replace(" — ", ", ", 1)
        elif component not in self.delayed():
            return (
                f'<p id="{pid}" hx-swap-oob="true" class="panel-freshness" '
                f'data-state="live" hidden></p>'
            )
        else:
            text = "delayed" + _moment(self._last[component][1])
        return (
            f'<p id="{pid}" hx-swap-oob="true" class="panel-freshness panel-freshness--delayed" '
            f'role="status" data-state="delayed">{escape(text)}</p>'
        )

    def parts(self) -> list[tuple[str, str]]:
        """The header's status and every tick-driven panel's line, as (id, element)."""
        shown = sorted(set(self._last) | self.unreachable | self.watched)
        panels = [(panel_status_id(c), self.panel(c)) for c in shown]
        return [(FEED_STATUS_ID, self.element()), *panels]
