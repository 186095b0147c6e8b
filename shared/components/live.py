"""Live sessions: follow the gateway's sessions, feed components, publish ``ui.*`` parts.

One live instance per (user, component) is shared by that user's sessions and dropped with
the last one. Each subscribed subject is subscribed once; messages are routed to instances
by the placeholders of the component's subject template (``{account_id}``, ``{user_id}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cache
from typing import Any

from shared import wire
from shared.bus import Handler, MessageBus, Subscription, subject_matches
from shared.components.base import Component, ComponentContext
from shared.components.errors import PermissionDenied
from shared.components.metrics import ComponentMetrics
from shared.components.registry import Registry
from shared.components.rendering import Changes, PartsTracker
from shared.components.runtime import mount
from shared.components.scope import UnitOfWork
from shared.identity import Identity

__all__ = ["LiveInstance", "LiveSessions", "subject_pattern"]

log = logging.getLogger(__name__)

_PLACEHOLDER = re.compile(r"^\{(\w+)\}$")


@cache
def subject_pattern(template: str) -> str:
    """``"orders.events.{account_id}"`` → ``"orders.events.*"``."""
    return ".".join("*" if _PLACEHOLDER.match(t) else t for t in template.split("."))


def _bindings(template: str, subject: str) -> dict[str, str]:
    return {
        m.group(1): token
        for t, token in zip(template.split("."), subject.split("."), strict=False)
        if (m := _PLACEHOLDER.match(t))
    }


@dataclass(eq=False)
class LiveInstance:
    component: Component
    tracker: PartsTracker = field(default_factory=PartsTracker)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass
class _Session:
    identity: Identity
    last_seen: float


def _identity(payload: Mapping[str, Any]) -> Identity:
    return Identity(
        user_id=int(payload["user_id"]),
        account_id=int(payload["account_id"]),
        username=str(payload.get("username", "")),
        permissions=frozenset(payload.get("permissions") or ()),
        session_id=str(payload["session_id"]),
    )


def _stamp(message: Mapping[str, Any]) -> Any:
    ts = message.get("ts")
    return ts if isinstance(ts, str | int | float) else datetime.now(UTC).isoformat()


NO_CHANGES = Changes(False, [])


class LiveSessions:
    """The live side of a component service; :meth:`start` subscribes, :meth:`stop` ends."""

    def __init__(
        self,
        registry: Registry,
        bus: MessageBus,
        *,
        context: Callable[[Identity], ComponentContext] | None = None,
        heartbeat_interval: float = 10.0,
        missed_heartbeats: int = 3,
        clock: Callable[[], float] = time.monotonic,
        metrics: ComponentMetrics | None = None,
    ) -> None:
        self.registry = registry
        self.bus = bus
        self._context = context or (lambda identity: ComponentContext(user=identity))
        self.heartbeat_interval = heartbeat_interval
        self.missed_heartbeats = missed_heartbeats
        self._clock = clock
        self._metrics = metrics
        self.sessions: dict[str, _Session] = {}
        self.instances: dict[tuple[int, str], LiveInstance] = {}
        self._subs: list[Subscription] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._user_locks: dict[int, asyncio.Lock] = {}
        self._failed: set[tuple[int, str]] = set()

    @property
    def live_components(self) -> list[type[Component]]:
        return [cls for cls in self.registry if cls.subscriptions]

    async def start(self) -> None:
        handlers: dict[str, Handler] = {
            wire.SESSION_OPENED: self._on_opened,
            wire.SESSION_HEARTBEAT: self._on_heartbeat,
            wire.SESSION_CLOSED: self._on_closed,
        }
        patterns = {subject_pattern(t) for c in self.live_components for t in c.subscriptions}
        for pattern in sorted(patterns):
            handlers[pattern] = self.deliver
        for subject, handler in handlers.items():
            self._subs.append(await self.bus.subscribe(subject, handler))
        await self.bus.flush()  # subscribed at the server before anyone is told we are up
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def stop(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        self.sessions.clear()
        self.instances.clear()

    # -- sessions --------------------------------------------------------------------
    async def _on_opened(self, _subject: str, payload: dict[str, Any]) -> None:
        await self.open(payload)

    async def _on_heartbeat(self, _subject: str, payload: dict[str, Any]) -> None:
        session = self.sessions.get(str(payload.get("session_id")))
        if session is None:
            await self.open(payload)  # e.g. this process restarted: catch up
            return
        session.last_seen = self._clock()
        user_id = session.identity.user_id
        retry = [cls for cls in self.live_components if (user_id, cls.name) in self._failed]
        for cls in retry:
            await self._open_component(cls, session.identity)

    async def _on_closed(self, _subject: str, payload: dict[str, Any]) -> None:
        self.close(str(payload.get("session_id")))

    async def open(self, payload: Mapping[str, Any]) -> None:
        """A session opened (or reconnected): mount what is not live, publish full renders."""
        identity = _identity(payload)
        self.sessions[identity.session_id] = _Session(identity, self._clock())
        lock = self._user_locks.setdefault(identity.user_id, asyncio.Lock())
        async with lock:
            for cls in self.live_components:
                await self._open_component(cls, identity)
        self._gauge()

    async def _open_component(self, cls: type[Component], identity: Identity) -> None:
        key = (identity.user_id, cls.name)
        instance = self.instances.get(key)
        if instance is None:
            try:
                component = await mount(cls, self._context(identity))
            except PermissionDenied:
                return
            except Exception:
                log.exception("live mount of %s for user %s failed", cls.name, identity.user_id)
                self._failed.add(key)  # retried on the next heartbeat
                return
            self._failed.discard(key)
            instance = self.instances[key] = LiveInstance(component)
        async with instance.lock:
            await self._publish(instance, instance.tracker.full(instance.component), {})

    def close(self, session_id: str) -> None:
        """Forget a session; the user's live instances go with their last session."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return
        user_id = session.identity.user_id
        if not any(s.identity.user_id == user_id for s in self.sessions.values()):
            for key in [k for k in self.instances if k[0] == user_id]:
                del self.instances[key]
            self._failed = {k for k in self._failed if k[0] != user_id}
            self._user_locks.pop(user_id, None)
        self._gauge()

    def sweep(self) -> list[str]:
        """Forget sessions that missed ``missed_heartbeats`` heartbeats; their ids."""
        deadline = self._clock() - self.heartbeat_interval * self.missed_heartbeats
        stale = [sid for sid, s in self.sessions.items() if s.last_seen < deadline]
        for session_id in stale:
            self.close(session_id)
        return stale

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                self.sweep()
            except Exception:
                log.exception("session sweep failed")

    # -- messages --------------------------------------------------------------------
    async def deliver(self, subject: str, payload: dict[str, Any]) -> None:
        """Route one bus message to every live instance subscribed to it."""
        routes = [
            (cls, _bindings(template, subject), event)
            for cls in self.live_components
            for template, event in cls.subscriptions.items()
            if subject_matches(subject_pattern(template), subject)
        ]
        jobs = [
            self._handle(instance, {**payload, "event": event})
            for cls, bound, event in routes
            for instance in list(self.instances.values())
            if type(instance.component) is cls
            and all(str(getattr(instance.component.user, k, None)) == v for k, v in bound.items())
        ]
        for job in jobs:  # in turn: a tick fans out to many instances, none waits on I/O
            await job

    async def _handle(self, instance: LiveInstance, message: dict[str, Any]) -> None:
        component = instance.component
        async with instance.lock:
            uow = component._uow = UnitOfWork(component.request.db)
            try:
                result = await component.on_ws_message(message)
                await uow.commit()
                # a handler that returns False says "nothing changed": skip the diff
                changes = NO_CHANGES if result is False else instance.tracker.changes(component)
            except Exception:
                await uow.rollback()
                log.exception("%s.on_ws_message(%s) failed", component.name, message.get("event"))
                return
            finally:
                component._uow = None
            await self._publish(instance, changes, message)

    async def adopt(self, component: Component, event: str = "") -> None:
        """After a successful event, the user's live instance takes over its state
        (through :meth:`Component.adopt`), unless the event is page-only."""
        if event in type(component).page_only_events:
            return
        user_id = getattr(component.request.user, "user_id", None)
        instance = self.instances.get((user_id, component.name))  # type: ignore[arg-type]
        if instance is None:
            return
        async with instance.lock:
            instance.component.adopt(copy.deepcopy(component.state))
            await self._publish(instance, instance.tracker.changes(instance.component), {})

    async def _publish(
        self, instance: LiveInstance, changes: Changes, message: Mapping[str, Any]
    ) -> None:
        if not changes:
            return
        component = instance.component
        user_id = getattr(component.request.user, "user_id", 0)
        payload = {
            "component": component.name,
            "full": changes.full,
            "parts": [p.to_wire() for p in changes.parts],
            "ts": _stamp(message),
        }
        try:
            await self.bus.publish(wire.ui_subject(int(user_id or 0), component.name), payload)
        except Exception:
            log.exception("publishing %s for user %s failed", component.name, user_id)
            return
        if self._metrics is not None:
            self._metrics.published(component.name, changes.full, len(changes.parts))

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.live(len(self.sessions), len(self.instances))
