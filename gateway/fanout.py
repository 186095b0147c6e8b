"""Fan-out of ``ui.*`` messages to this gateway's sockets, from one NATS subscription.

Per-user updates (``ui.<partition>.<component>``, batched) go to every socket of their
user, or to one socket when they name its session (a connecting tab's full render).
Shared parts (``ui.shared.<component>``, keyed by topic) are checked once and handed to
every socket whose user's page shows that topic, as the user's latest full render of the
component declared. Writing into a socket's buffer never waits, so a slow socket never
delays another (DESIGN.md §3.3).

Frames follow ticks: a component's ``ui.shared`` message carrying a tick's ``seq`` is the
last it sends for that tick. Once every component that follows ticks (those heard from in
the last ``EXPECT_S``) is done with a tick, each socket holding parts of it is told to
send them, so a socket gets one frame per tick, as soon as its last part is in.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

from gateway.buffer import PartBuffer, message_ts_ms, now_ms, prepare_parts
from gateway.metrics import GatewayMetrics
from shared import wire

__all__ = ["EXPECT_S", "Fanout", "LiveSocket"]

EXPECT_S = 2.0  # a component silent about ticks for this long is not waited for


class LiveSocket(Protocol):
    user_id: int
    session_id: str
    buffer: PartBuffer


class Fanout:
    def __init__(self, metrics: GatewayMetrics | None = None, *, tick_wait_s: float = 0.15) -> None:
        self._metrics = metrics
        self.tick_wait_s = tick_wait_s
        self._fallback: asyncio.TimerHandle | None = None
        self._sockets: dict[int, set[LiveSocket]] = defaultdict(set)
        self._by_session: dict[str, LiveSocket] = {}
        self._topics: dict[tuple[int, str], frozenset[str]] = {}
        self._watchers: dict[tuple[str, str], set[int]] = defaultdict(set)
        self._done: dict[str, tuple[int, float]] = {}  # component → (last tick done, when)
        self.on_tick_done: Callable[[str, float | None], None] | None = None
        self._waiting: set[LiveSocket] = set()  # sockets holding tick-driven parts

    def __len__(self) -> int:
        return len(self._by_session)

    def add(self, socket: LiveSocket) -> None:
        self._sockets[socket.user_id].add(socket)
        self._by_session[socket.session_id] = socket

    def remove(self, socket: LiveSocket) -> None:
        self._by_session.pop(socket.session_id, None)
        self._waiting.discard(socket)
        sockets = self._sockets.get(socket.user_id)
        if sockets is None:
            return
        sockets.discard(socket)
        if not sockets:
            del self._sockets[socket.user_id]
            for key in [k for k in self._topics if k[0] == socket.user_id]:
                self._set_topics(key[0], key[1], frozenset())

    def sockets(self) -> list[LiveSocket]:
        return list(self._by_session.values())

    def topics(self, user_id: int, component: str) -> frozenset[str]:
        return self._topics.get((user_id, component), frozenset())

    def _set_topics(self, user_id: int, component: str, topics: frozenset[str]) -> None:
        key = (user_id, component)
        old = self._topics.get(key, frozenset())
        for topic in old - topics:
            watchers = self._watchers.get((component, topic))
            if watchers is not None:
                watchers.discard(user_id)
                if not watchers:
                    del self._watchers[(component, topic)]
        for topic in topics - old:
            self._watchers[(component, topic)].add(user_id)
        if topics:
            self._topics[key] = topics
        else:
            self._topics.pop(key, None)

    async def on_ui(self, subject: str, message: dict[str, Any]) -> None:
        """The handler of the gateway's one ``ui.>`` subscription."""
        tokens = subject.split(".")
        component = str(message.get("component", ""))
        if len(tokens) != 3 or tokens[2] != component or component not in wire.ID_PREFIX:
            return  # only the dashboard's components, each on its own subject
        ts = message_ts_ms(message.get("ts"))
        if ts is not None and self._metrics is not None:
            self._metrics.latency_received.observe(max(0.0, now_ms() - ts) / 1000)
        tick = message.get("tick")
        urgent = not isinstance(tick, int)
        if tokens[1] == wire.UI_SHARED:
            self._shared(component, message.get("topics"), ts, urgent)
            if isinstance(tick, int):
                self._tick_done(component, tick)
                if self.on_tick_done is not None:
                    self.on_tick_done(component, ts)
        else:
            for update in message.get("updates") or ():
                if isinstance(update, dict):
                    self._update(component, update, ts, urgent)

    def _tick_done(self, component: str, tick: int) -> None:
        now = time.monotonic()
        self._done[component] = (max(tick, self._done.get(component, (tick, 0))[0]), now)
        expected = [seq for seq, at in self._done.values() if now - at < EXPECT_S]
        if all(seq >= tick for seq in expected):
            self._release_waiting()

    def _release_waiting(self) -> None:
        """Every socket holding tick-driven parts may send them."""
        if self._fallback is not None:
            self._fallback.cancel()
            self._fallback = None
        for socket in self._waiting:
            socket.buffer.release()
        self._waiting.clear()

    def _put(
        self,
        socket: LiveSocket,
        component: str,
        parts: list[tuple[str, str]],
        ts: float | None,
        *,
        full: bool = False,
        urgent: bool = True,
    ) -> None:
        socket.buffer.put_prepared(component, parts, ts, full=full, urgent=urgent)
        if not urgent and parts:
            self._waiting.add(socket)
            if self._fallback is None:  # a component that never says "done" delays no one
                loop = asyncio.get_running_loop()
                self._fallback = loop.call_later(self.tick_wait_s, self._release_waiting)

    def _update(
        self, component: str, update: dict[str, Any], ts: float | None, urgent: bool
    ) -> None:
        user_id = update.get("user")
        if not isinstance(user_id, int):
            return
        sockets = self._sockets.get(user_id)
        if not sockets:
            return
        full = bool(update.get("full"))
        session = update.get("session")
        if session is not None:
            target = self._by_session.get(str(session))
            if target is None or target.user_id != user_id:
                return
            targets: Any = (target,)
        else:
            targets = tuple(sockets)
        topics = update.get("topics")
        if full and isinstance(topics, list):
            self._set_topics(user_id, component, frozenset(str(t) for t in topics))
        parts = prepare_parts(component, update.get("parts"))
        for socket in targets:
            self._put(socket, component, parts, ts, full=full, urgent=urgent or full)

    def _shared(self, component: str, topics: Any, ts: float | None, urgent: bool) -> None:
        if not isinstance(topics, dict):
            return
        for topic, raw_parts in topics.items():
            users = self._watchers.get((component, topic))
            if not users:
                continue
            parts = prepare_parts(component, raw_parts)
            for user_id in users:
                for socket in self._sockets.get(user_id, ()):
                    self._put(socket, component, parts, ts, urgent=urgent)
