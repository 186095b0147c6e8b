"""Announcing sockets to the component services, a window at a time.

An announcement makes every component service mount the user (unless live already) and
render the page's components in full for that socket: 40–60 KB, the heaviest thing the
live path carries. A thousand announced at once (a connect storm, a gateway restart, a
NATS reconnect) had the services render faster than this gateway could read: megabytes
queued in its NATS connection, every page's ticks seconds late behind them, nats-server
dropped the gateway as a slow consumer, and the reconnect announced every socket again.

So announcements go out through a window: at most ``window`` sockets wait for their full
renders at any time. The next is announced when one has every component it was announced
for (the fan-out reports each full render addressed to a socket), when the components it
still waits for are those whose service is down, or after ``timeout_s`` (a component the
user may not see sends nothing). The rate follows what the services and this gateway
carry, and what is in flight stays bounded however many sockets wait. A socket asked for
again before its turn is announced once, for every component asked.

A socket is not in the heartbeat until it is announced (the services mount a session
they hear of in a heartbeat), and its page says "waiting for prices" until its renders
are in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from gateway.metrics import GatewayMetrics
from shared import wire

__all__ = ["ANNOUNCE_BATCH", "Admissions", "Announceable"]

log = logging.getLogger(__name__)

ANNOUNCE_BATCH = 100  # sockets per session.announce message
RECHECK_S = 1.0  # the waiting sockets are looked at least this often


class _User(Protocol):
    def announcement(self, socket_session_id: str) -> dict[str, Any]: ...


class Announceable(Protocol):
    session_id: str
    announced: bool  # the services have heard of this socket's session

    @property
    def user(self) -> _User: ...

    def admitted(self) -> None:
        """Its full renders are in (or will not come): the page may say it is live."""


@dataclass(slots=True)
class _Ask:
    conn: Announceable
    components: set[str]
    first: bool  # the socket's first announcement: ``session.opened``
    since: float = 0.0  # when it was announced
    missing: set[str] = field(default_factory=set)


class Admissions:
    def __init__(
        self,
        *,
        window: int,
        timeout_s: float,
        metrics: GatewayMetrics | None = None,
        excused: Callable[[], set[str]] = set,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.timeout_s = timeout_s
        self._metrics = metrics
        self._excused = excused  # components whose service does not answer
        self._clock = clock
        self._queue: dict[str, _Ask] = {}  # session id → ask, oldest first
        self._out: dict[str, _Ask] = {}  # announced, waiting for full renders
        self._wake = asyncio.Event()

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def outstanding(self) -> int:
        return len(self._out)

    def waiting_for(self, session_id: str) -> set[str]:
        """The components whose full renders this socket waits its turn to be announced
        for (none once announced)."""
        queued = self._queue.get(session_id)
        return set(queued.components) if queued is not None else set()

    def pending(self, session_id: str) -> bool:
        """Whether this socket waits for its turn or for its full renders."""
        return session_id in self._queue or session_id in self._out

    def ask(self, conn: Announceable, components: Iterable[str] = wire.COMPONENTS) -> None:
        """Announce ``conn`` for full renders of ``components`` when its turn comes."""
        queued = self._queue.get(conn.session_id)
        if queued is not None:
            queued.components.update(components)
        else:
            self._queue[conn.session_id] = _Ask(conn, set(components), not conn.announced)
        self._wake.set()

    def rendered(self, session_id: str, component: str) -> None:
        """A full render of ``component`` addressed to this socket reached the fan-out."""
        out = self._out.get(session_id)
        if out is not None:
            out.missing.discard(component)
            if not out.missing:
                self._done(session_id)

    def forget(self, session_id: str) -> None:
        """The socket closed."""
        self._queue.pop(session_id, None)
        if self._out.pop(session_id, None) is not None:
            self._wake.set()

    def _done(self, session_id: str) -> None:
        out = self._out.pop(session_id)
        self._wake.set()
        try:
            out.conn.admitted()
        except Exception:
            log.exception("socket %s: admitted() failed", session_id)

    def _expire(self, now: float) -> float | None:
        """Release the sockets that waited long enough, or wait only for services that do
        not answer; seconds until the next would time out (``None``: none waits)."""
        excused = self._excused()
        next_s: float | None = None
        for session_id, out in list(self._out.items()):
            left = out.since + self.timeout_s - now
            if left <= 0 or out.missing <= excused:
                if left <= 0 and self._metrics is not None:
                    self._metrics.announce_timeouts.inc()
                self._done(session_id)
            elif next_s is None or left < next_s:
                next_s = left
        return next_s

    def _take(self, now: float) -> list[_Ask]:
        """The queued asks that fit in the window, now counted as announced."""
        taken: list[_Ask] = []
        while self._queue and len(self._out) < self.window:
            session_id = next(iter(self._queue))
            ask = self._queue.pop(session_id)
            ask.since, ask.missing = now, set(ask.components)
            out = self._out.get(session_id)
            if out is not None:  # announced again while waiting: it waits for both
                ask.missing |= out.missing
            self._out[session_id] = ask
            ask.conn.announced = True
            taken.append(ask)
        return taken

    async def run(self, bus: Any) -> None:
        """Announce the queued sockets as the window allows, forever (cancel to stop)."""
        while True:
            self._wake.clear()
            now = self._clock()
            next_s = self._expire(now)
            taken = self._take(now)
            if taken:
                await self._announce(bus, taken)
                continue
            with contextlib.suppress(TimeoutError):  # a service may stop answering: look again
                async with asyncio.timeout(min(next_s or RECHECK_S, RECHECK_S)):
                    await self._wake.wait()

    async def _announce(self, bus: Any, asks: list[_Ask]) -> None:
        """``session.opened`` for new sockets; ``session.announce`` for the others, in
        batches per set of components. A publish that fails (NATS away) is not retried:
        the reconnect announces every socket again."""
        again: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for ask in asks:
            if self._out.get(ask.conn.session_id) is not ask:
                continue  # closed (or asked again) while an earlier publish waited
            announcement = ask.conn.user.announcement(ask.conn.session_id)
            if ask.first:
                try:
                    await bus.publish(wire.SESSION_OPENED, announcement)
                except Exception:
                    log.warning("could not announce socket %s", ask.conn.session_id)
            else:
                again.setdefault(tuple(sorted(ask.components)), []).append(announcement)
        for components, sessions in again.items():
            for start in range(0, len(sessions), ANNOUNCE_BATCH):
                batch = sessions[start : start + ANNOUNCE_BATCH]
                try:
                    await bus.publish(
                        wire.SESSION_ANNOUNCE, {"components": list(components), "sessions": batch}
                    )
                except Exception:
                    log.warning("could not re-announce %d sockets", len(batch))
                    continue
                if self._metrics is not None:
                    self._metrics.resyncs.inc(len(batch))
