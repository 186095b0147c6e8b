"""Live sessions: follow the gateway's sessions, feed components, publish ``ui.*`` parts.

One live instance per (user, component) is shared by that user's sessions (tabs) and
dropped with the last one. A connecting tab gets its own full render; the user's other
tabs get nothing. Sessions are mounted from a queue by a few workers, so a burst of
connections neither floods the database nor mounts a session that closed meanwhile.

The pieces: :class:`~shared.components.sessions.SessionTable` tracks sessions,
:mod:`~shared.components.routing` finds the instances a message reaches,
:class:`~shared.components.publish.UiPublisher` publishes their parts and
:class:`~shared.components.ticking.TickDriver` drives ticks. This class mounts,
updates and reloads instances with them.

With several replicas, each owns a share of the live partitions
(:class:`~shared.leases.PartitionLeases`): a replica mounts, updates and publishes only
the users of its partitions and ignores everybody else's sessions. On taking partitions
over it asks the gateways to re-announce their sockets and sends those full renders from
the database; on losing them it forgets their users. An event handled by a replica that
does not own the user is passed to the owner (``live.refresh.<component>``), which
reloads the instance from the database: never a second live copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from shared import wire
from shared.bus import Handler, MessageBus, Subscription
from shared.components.base import Component, ComponentContext
from shared.components.cache import MountCache
from shared.components.errors import PermissionDenied
from shared.components.instance import LiveInstance, changes_after, stamp
from shared.components.metrics import ComponentMetrics
from shared.components.pricebook import PriceBook
from shared.components.publish import UiPublisher
from shared.components.registry import Registry
from shared.components.rendering import Changes
from shared.components.routing import InstanceIndex, Route, Routes, subject_pattern
from shared.components.runtime import mount
from shared.components.scope import UnitOfWork
from shared.components.sessions import SessionTable, identity_of
from shared.components.ticking import TickDriver
from shared.identity import Identity
from shared.leases import PartitionLeases

__all__ = ["LiveInstance", "LiveSessions", "changes_after", "subject_pattern"]

log = logging.getLogger(__name__)

MOUNT_WORKERS = 4
RELOAD_BATCH = 50  # live instances reloaded back to back after a NATS outage...
RELOAD_PAUSE_S = 0.1  # ...then a pause


class LiveSessions:
    """The live side of a component service; :meth:`start` subscribes, :meth:`stop` ends."""

    def __init__(
        self,
        registry: Registry,
        bus: MessageBus,
        *,
        context: Callable[[Identity], ComponentContext] | None = None,
        prices: PriceBook | None = None,
        heartbeat_interval: float = 10.0,
        missed_heartbeats: int = 3,
        clock: Callable[[], float] = time.monotonic,
        metrics: ComponentMetrics | None = None,
        mount_workers: int = MOUNT_WORKERS,
        leases: PartitionLeases | None = None,
        cache: MountCache | None = None,
    ) -> None:
        self.registry = registry
        self.cache = cache
        self.bus = bus
        self.prices = prices if prices is not None else PriceBook()
        self._context = context or (lambda identity: ComponentContext(user=identity))
        self.heartbeat_interval = heartbeat_interval
        self.missed_heartbeats = missed_heartbeats
        self.metrics = metrics
        self.leases = leases
        self.publisher = UiPublisher(bus, metrics, leases)
        self.sessions = SessionTable(clock)
        self.ticks = TickDriver(self)
        self.instances = InstanceIndex(on_change=self.ticks.forget_topics)
        self.routes = Routes(self.live_components)
        self._subs: list[Subscription] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._user_locks: dict[int, asyncio.Lock] = {}
        self._failed: set[tuple[int, str]] = set()
        self._mount_queue: asyncio.Queue[str] = asyncio.Queue()
        self._mount_workers = mount_workers
        if metrics is not None:
            metrics.follow_live(
                lambda: len(self.sessions),
                lambda: len(self.instances),
                lambda: wire.LIVE_PARTITIONS if leases is None else len(leases.owned),
            )

    @property
    def clock(self) -> Callable[[], float]:
        """The clock of session ages and of components' update rates."""
        return self.sessions.clock

    @property
    def live_components(self) -> list[type[Component]]:
        return [cls for cls in self.registry if cls.subscriptions]

    @property
    def tick_components(self) -> list[type[Component]]:
        return [c for c in self.live_components if wire.PRICES_TICKS in c.subscriptions]

    async def start(self) -> None:
        handlers: dict[str, Handler] = {
            wire.SESSION_ALL: self._on_session,
            wire.LIVE_REFRESH_ALL: self._on_refresh,
        }
        for pattern, routes in sorted(self.routes.by_pattern.items()):
            handlers[pattern] = self._deliverer(routes)
        if self.tick_components:
            handlers[wire.PRICES_TICKS] = self.ticks.on_tick
            handlers[wire.GATEWAY_PACE] = self.ticks.pace.on_pace
        for subject, handler in handlers.items():
            self._subs.append(await self.bus.subscribe(subject, handler))
        await self.bus.flush()  # subscribed at the server before anyone is told we are up
        self._tasks = [asyncio.create_task(self._sweep_forever())]
        if self.tick_components:
            self._tasks.append(asyncio.create_task(self.ticks.run()))
        self._tasks += [
            asyncio.create_task(self._mount_worker()) for _ in range(self._mount_workers)
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        for sub in self._subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
        self._subs.clear()
        self.sessions.clear()
        self.instances.clear()

    # -- partitions ------------------------------------------------------------------
    def owns_user(self, user_id: int) -> bool:
        """Whether this replica is the live owner of ``user_id`` (always, alone)."""
        return self.leases is None or self.leases.owns(wire.partition_of(user_id))

    async def partitions_gained(self, partitions: set[int]) -> None:
        """Taken over: ask the gateways for these partitions' sockets (they answer with
        ``session.announce``, and their users get full renders from the database)."""
        for cls in self.tick_components:
            self.ticks.forget_topics(cls.name)
        if self.cache is not None:  # mounts cached here while another replica owned these
            self.cache.clear()  # users (a page load's) may predate what that one changed
        if self.metrics is not None:
            self.metrics.takeovers.inc(len(partitions))
        request = {
            "components": [cls.name for cls in self.live_components],
            "partitions": sorted(partitions),
        }
        with contextlib.suppress(Exception):
            await self.bus.publish(wire.GATEWAY_RESYNC, request)

    async def partitions_lost(self, partitions: set[int]) -> None:
        """Handed over (or lapsed): forget these partitions' users, publish nothing more."""
        for session_id, session in list(self.sessions.items()):
            if wire.partition_of(session.identity.user_id) in partitions:
                self.close(session_id)
        for cls in self.tick_components:
            self.ticks.forget_topics(cls.name)

    # -- sessions --------------------------------------------------------------------
    async def _on_session(self, subject: str, payload: dict[str, Any]) -> None:
        if subject == wire.SESSION_OPENED:
            if self._owned(payload):
                self._register(payload, queue=True)
        elif subject == wire.SESSION_HEARTBEAT:
            # a gateway sends its sockets' sessions in batches; one session alone is fine
            for announcement in payload.get("sessions") or [payload]:
                self._beat(announcement)
        elif subject == wire.SESSION_CLOSED:
            self.close(str(payload.get("session_id")))
        elif subject == wire.SESSION_ANNOUNCE:
            names = {cls.name for cls in self.live_components}
            if not names.intersection(payload.get("components") or ()):
                return
            for announcement in payload.get("sessions") or ():
                if self._owned(announcement):
                    self._register(announcement, queue=True)  # a full render, queued

    def _owned(self, announcement: Mapping[str, Any]) -> bool:
        try:
            return self.owns_user(int(announcement["user_id"]))
        except (KeyError, TypeError, ValueError):
            return False

    def _beat(self, announcement: Mapping[str, Any]) -> None:
        session = self.sessions.beat(str(announcement.get("session_id")))
        if session is None:
            # e.g. this process restarted; not while the gateway's window holds the
            # socket's turn for this service's components (its announcement will come)
            waiting = set(announcement.get("waiting") or ())
            mine = {cls.name for cls in self.live_components}
            if self._owned(announcement) and not mine <= waiting:
                self._register(announcement, queue=True)
            return
        user_id = session.identity.user_id
        if any((user_id, cls.name) in self._failed for cls in self.live_components):
            self._mount_queue.put_nowait(session.identity.session_id)  # retry failed mounts

    def _register(self, payload: Mapping[str, Any], *, queue: bool) -> Identity | None:
        try:
            identity = identity_of(payload)
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring a malformed session announcement")
            return None
        self.sessions.add(identity)
        if queue:
            self._mount_queue.put_nowait(identity.session_id)
        return identity

    async def open(self, payload: Mapping[str, Any]) -> None:
        """A session opened (or reconnected): mount what is not live, publish its full
        renders (now, not through the queue)."""
        identity = self._register(payload, queue=False)
        if identity is not None:
            await self._open_session(identity)

    async def settled(self) -> None:
        """Wait until every queued session is mounted (or skipped) and every tick received
        so far is processed (for tests: an event to wait for, not a sleep)."""
        await self._mount_queue.join()
        await self.ticks.idle()

    async def _mount_worker(self) -> None:
        while True:
            session_id = await self._mount_queue.get()
            try:
                session = self.sessions.get(session_id)
                if session is None:  # closed before its turn came: never mounted
                    if self.metrics is not None:
                        self.metrics.mounts_skipped.inc()
                    continue
                await self._open_session(session.identity)
            except Exception:
                log.exception("opening session %s failed", session_id)
            finally:
                self._mount_queue.task_done()

    async def _open_session(self, identity: Identity) -> None:
        lock = self._user_locks.setdefault(identity.user_id, asyncio.Lock())
        async with lock:
            for cls in self.live_components:
                if identity.session_id not in self.sessions:
                    return
                await self._open_component(cls, identity)

    async def _open_component(self, cls: type[Component], identity: Identity) -> None:
        key = (identity.user_id, cls.name)
        instance = self.instances.get(key)
        if instance is None:
            try:
                component = await mount(cls, self._context(identity))
            except PermissionDenied:
                batch = self.publisher.batch(cls.name, stamp({}))
                batch.nothing(identity.user_id, identity.session_id)
                await batch.send()
                return
            except Exception:
                log.exception("live mount of %s for user %s failed", cls.name, identity.user_id)
                self._failed.add(key)  # retried on the next heartbeat
                return
            self._failed.discard(key)
            if identity.session_id not in self.sessions:
                return  # the session closed while mounting
            # an event may have made the instance while this mount read older rows: keep it
            instance = self.instances.get(key) or self.instances.install(key[0], component)
        async with instance.lock:
            # this tab's own full render; the user's other tabs already show this state
            changes = instance.tracker.full(instance.component)
            batch = self.publisher.batch(cls.name, stamp({}))
            batch.add(
                identity.user_id,
                changes,
                session=identity.session_id,
                topics=instance.component.topics(),
            )
            await batch.send()

    def close(self, session_id: str) -> None:
        """Forget a session; the user's live instances go with their last session."""
        session, last = self.sessions.remove(session_id)
        if session is None:
            return
        if last:
            user_id = session.identity.user_id
            self.instances.drop_user(user_id)
            self._failed = {k for k in self._failed if k[0] != user_id}
            self._user_locks.pop(user_id, None)

    def sweep(self) -> list[str]:
        """Forget sessions that missed ``missed_heartbeats`` heartbeats; their ids."""
        stale = self.sessions.stale(self.heartbeat_interval * self.missed_heartbeats)
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

    # -- other messages ----------------------------------------------------------------
    def _deliverer(self, routes: list[Route]) -> Handler:
        """The handler of one subscribed pattern: each message to the instances its
        routes reach."""

        async def deliver(subject: str, payload: dict[str, Any]) -> None:
            for route in routes:
                for instance in self.instances.addressees(route, subject, self.sessions):
                    await self._handle(instance, {**payload, "event": route.event})

        return deliver

    async def _handle(self, instance: LiveInstance, message: dict[str, Any]) -> None:
        component = instance.component
        async with instance.lock:
            uow = component._uow = UnitOfWork(component.request.db)
            try:
                result = await component.on_ws_message(message)
                await uow.commit()
                changes = changes_after(instance, result)
            except Exception:
                await uow.rollback()
                log.exception("%s.on_ws_message(%s) failed", component.name, message.get("event"))
                return
            finally:
                component._uow = None
            await self._publish(instance, changes, message)

    async def adopt(self, component: Component, event: str = "") -> None:
        """After a successful event, the user's live instance takes over its state
        (through :meth:`Component.adopt`), unless the event is page-only. On a replica
        that does not own the user, the owner is asked to reload it instead."""
        if event in type(component).page_only_events:
            return
        user_id = getattr(component.request.user, "user_id", None)
        if isinstance(user_id, int) and not self.owns_user(user_id):
            with contextlib.suppress(Exception):
                await self.bus.publish(wire.live_refresh(component.name), {"user": user_id})
            return
        instance = self.instances.get((user_id, component.name))  # type: ignore[arg-type]
        if instance is None:
            # a tab may be waiting for its mount, which may have read the rows before this
            # event wrote them: the event's state becomes the live instance
            identity = self.sessions.identity_of_user(user_id) if isinstance(user_id, int) else None
            if identity is None:
                return
            live = type(component)(self._context(identity))
            live.adopt(copy.deepcopy(component.state))
            instance = self.instances.install(identity.user_id, live)
            async with instance.lock:
                await self._publish(instance, instance.tracker.full(live), {})
            return
        async with instance.lock:
            instance.component.adopt(copy.deepcopy(component.state))
            await self._publish(instance, instance.tracker.changes(instance.component), {})

    async def _on_refresh(self, subject: str, payload: dict[str, Any]) -> None:
        """Another replica changed this user's data: reload the live instance from the
        database and publish what changed (nothing if this replica is not the owner)."""
        user_id = payload.get("user")
        if not isinstance(user_id, int):
            return
        instance = self.instances.get((user_id, subject.rsplit(".", 1)[1]))
        if instance is not None:
            await self._reload(instance, full=False)

    async def reload_all(self) -> None:
        """After a NATS outage (events may have been missed): bring every live instance
        back to the database's truth and publish full renders, in shuffled batches with a
        pause between them, so a thousand users do not hit the database at once."""
        instances = list(self.instances.values())
        random.shuffle(instances)
        for i, instance in enumerate(instances):
            if i and i % RELOAD_BATCH == 0:
                await asyncio.sleep(RELOAD_PAUSE_S)
            await self._reload(instance, full=True)

    async def _reload(self, instance: LiveInstance, *, full: bool) -> None:
        component = instance.component
        async with instance.lock:
            uow = component._uow = UnitOfWork(component.request.db)
            try:
                await component.remount()
                await uow.commit()
            except Exception:
                await uow.rollback()
                log.exception("reloading %s failed", component.name)
                return
            finally:
                component._uow = None
            tracker = instance.tracker
            changes = tracker.full(component) if full else tracker.changes(component)
            await self._publish(instance, changes, {})

    async def _publish(
        self, instance: LiveInstance, changes: Changes, message: Mapping[str, Any]
    ) -> None:
        """One user's changes, to every tab of that user, now."""
        if not changes:
            return
        component = instance.component
        user_id = int(getattr(component.request.user, "user_id", 0) or 0)
        batch = self.publisher.batch(component.name, stamp(message))
        topics = component.topics() if changes.full else None
        if topics is not None:
            self.ticks.forget_topics(component.name)
        batch.add(user_id, changes, topics=topics)
        await batch.send()
