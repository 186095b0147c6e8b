"""Ticks for a service's live components: merged while busy, one pass per tick.

The driver keeps the tickers changed since its last pass (a busy service skips to the
newest prices; it never works through a backlog). Each pass, per tick-driven component:
render the shared parts once (:meth:`Component.topic_parts`) for the topics some live
instance shows; bring every live instance up to date and publish the changed parts of all
users as one message per partition (the shared parts just before the first of them,
``ui.shared`` with ``done: false``), in ascending partition order (written to NATS every
:data:`PARTITIONS_PER_WRITE`), each the last this component sends that partition for the
tick, so the gateway sends that partition's pages their frames while the pass goes on; and
end with the ``ui.shared`` message that names the tick (the gateway's cue that this
component is done with it).

A component with a ``live_interval`` brings each instance up to date about that often.
Its partitions are split into :data:`LIVE_SLICES` slices that fall due in turn, a slice
on the first tick after it is due (or, with a quiet feed, then): so a tick carries a
slice's work, not all of it every few ticks (that made every page wait for a whole pass
of it on those ticks).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from shared import wire
from shared.components.base import Component
from shared.components.instance import LiveInstance, changes_after, stamp
from shared.components.pacing import GatewayPace
from shared.components.rendering import Part

if TYPE_CHECKING:
    from shared.components.live import LiveSessions

__all__ = ["LIVE_SLICES", "PARTITIONS_PER_WRITE", "TICK_GRACE_S", "TickDriver"]

log = logging.getLogger(__name__)

TICK_GRACE_S = 0.3  # a rate-limited component waits this long past due for the next tick
PARTITIONS_PER_WRITE = 8  # partitions' messages a pass publishes between two NATS writes
LIVE_SLICES = 4  # a rate-limited component's partitions fall due in this many turns


@dataclass(slots=True)
class _Slice:
    """Partitions ``p`` with ``p % LIVE_SLICES == index`` of one rate-limited component."""

    index: int
    due: float
    pending: set[str] = field(default_factory=set)  # tickers changed since it last ran


class TickDriver:
    def __init__(self, live: LiveSessions) -> None:
        self._live = live
        # tickers changed since the last pass, per component
        self._pending: dict[str, set[str]] = {}
        self._pending_ts: Any = None
        self._pending_seq: Any = None
        self._last_seq: int | None = None  # the seq of the last tick received
        self._slices: dict[str, list[_Slice]] = {}  # per rate-limited component
        self._wakeups: set[str] = set()
        # topics any live instance shows, per component (recomputed after a full render)
        self._watched: dict[str, set[str] | None] = {}
        # live instances per component, grouped by partition (regrouped when they change)
        self._groups: dict[str, list[tuple[int, list[tuple[int, LiveInstance]]]]] = {}
        self._tick_ready = asyncio.Event()
        self._tick_idle = asyncio.Event()
        self._tick_idle.set()
        self._ticks_waiting = 0
        self.pace = GatewayPace(live.clock)
        """How often the gateways can take this service's live updates (``gateway.pace``)."""
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep  # tests hold it

    def forget_topics(self, component: str) -> None:
        """The topics some instance of ``component`` shows, or its instances, may have
        changed."""
        self._watched[component] = None
        self._groups.pop(component, None)

    async def idle(self) -> None:
        """Wait until every tick received so far is processed (for tests)."""
        await self._tick_idle.wait()

    async def on_tick(self, _subject: str, payload: dict[str, Any]) -> None:
        prices = payload.get("prices")
        if not isinstance(prices, dict):
            return
        self._live.prices.apply(prices)
        for cls in self._live.tick_components:
            if cls.live_interval > 0:
                for piece in self._slices_of(cls):
                    piece.pending.update(prices)
            else:
                self._pending.setdefault(cls.name, set()).update(prices)
        self._pending_ts = payload.get("ts")
        self._pending_seq = payload.get("seq")
        self._count_gap(self._pending_seq)
        self._ticks_waiting += 1
        self._tick_idle.clear()
        self._tick_ready.set()

    def _count_gap(self, seq: Any) -> None:
        """Count a tick whose ``seq`` is not the previous one's plus one. A cold pricefeed
        leader starts at the tick clock, so such a takeover counts one (large) skip."""
        if not isinstance(seq, int) or isinstance(seq, bool):
            return
        last, self._last_seq = self._last_seq, seq
        metrics = self._live.metrics
        if last is None or seq == last + 1 or metrics is None:
            return
        metrics.tick_gaps.labels("skipped" if seq > last else "backwards").inc()

    async def run(self) -> None:
        while True:
            await self._tick_ready.wait()
            self._tick_ready.clear()
            if self._ticks_waiting > 1 and self._live.metrics is not None:
                self._live.metrics.ticks_merged.inc(self._ticks_waiting - 1)
            self._ticks_waiting = 0
            started = time.perf_counter()
            try:
                await self.process_ticks()
            except Exception:
                log.exception("tick processing failed")
            if self._live.metrics is not None:
                self._live.metrics.tick_seconds.observe(time.perf_counter() - started)
            if not self._tick_ready.is_set():
                self._tick_idle.set()
            await self._keep_pace(started)

    async def _keep_pace(self, started: float) -> None:
        """While a gateway cannot keep up, the next pass starts no sooner than its interval
        after this one started: the ticks in between merge into it."""
        interval = self.pace.interval()
        if self._live.metrics is not None:
            self._live.metrics.pace.set(interval)
        wait = started + interval - time.perf_counter()
        if interval > 0 and wait > 0:
            await self.sleep(wait)

    async def process_ticks(self) -> None:
        """Bring every tick-driven component up to the ticks merged so far.

        Each component ends its turn with its ``ui.shared.<component>`` message carrying
        the tick's ``seq`` (possibly no topics): the gateway sends a socket its frame for a
        tick once every component has said it is done with that tick.
        """
        ts, seq = self._pending_ts, self._pending_seq
        for cls in self._live.tick_components:
            partitions: set[int] | None = None  # all
            if cls.live_interval > 0:
                tickers, partitions = self._due(cls)
            else:
                tickers = self._pending.get(cls.name) or set()
                self._pending[cls.name] = set()
            if tickers:
                shared = await self._tick_component(cls, tickers, ts, seq, partitions)
            else:
                shared = {}
            # done with the tick (with the shared parts if no partition followed them)
            await self._live.publisher.shared(
                cls.name, ts, shared, tick=seq, by_topic=cls.shared_by_topic
            )

    def _slices_of(self, cls: type[Component]) -> list[_Slice]:
        slices = self._slices.get(cls.name)
        if slices is None:  # the first falls due at once, the others in turn after it
            now, step = self._live.clock(), cls.live_interval / LIVE_SLICES
            slices = self._slices[cls.name] = [
                _Slice(i, now + i * step) for i in range(LIVE_SLICES)
            ]
        return slices

    def _due(self, cls: type[Component]) -> tuple[set[str], set[int]]:
        """The tickers and partitions of the slices of ``cls`` that are due (none: the
        others wait for a later tick, or for a wake-up if the feed goes quiet)."""
        now, interval = self._live.clock(), cls.live_interval
        early = interval / (2 * LIVE_SLICES)  # a tick a little early still takes its slice
        tickers: set[str] = set()
        indexes: set[int] = set()
        later: list[float] = []
        for piece in self._slices_of(cls):
            if not piece.pending:
                continue
            if now < piece.due - early:
                later.append(piece.due)
                continue
            tickers |= piece.pending
            indexes.add(piece.index)
            piece.pending = set()
            piece.due += interval  # in step: the slices stay a turn apart
            if piece.due < now:
                piece.due = now + interval  # the feed was quiet: start afresh
        if later and cls.name not in self._wakeups:
            self._wakeups.add(cls.name)
            delay = min(later) - now + TICK_GRACE_S
            asyncio.get_running_loop().call_later(delay, self._wake, cls.name)
        partitions = {p for p in range(wire.LIVE_PARTITIONS) if p % LIVE_SLICES in indexes}
        return tickers, partitions

    def _wake(self, name: str) -> None:
        self._wakeups.discard(name)
        self._tick_ready.set()

    async def _tick_component(
        self,
        cls: type[Component],
        tickers: set[str],
        ts: Any,
        seq: Any,
        partitions: set[int] | None = None,
    ) -> dict[str, list[Part]]:
        """Publish every instance's changes partition by partition, the shared parts before
        the first of them; the shared parts still to publish (no partition had changes:
        they go with the done marker)."""
        book = self._live.prices
        shown = self._shown(cls, tickers)
        shared = cls.topic_parts(shown, book) if shown else {}
        publisher = self._live.publisher
        prices = {t: book.quote(t) for t in tickers}
        message = {"event": wire.EVENT_PRICE_TICK, "prices": prices, "ts": ts}
        batch = publisher.batch(cls.name, stamp(message), tick=seq)
        groups = self._by_partition(cls.name)
        if partitions is not None:  # a slice: say which partitions follow, done with the rest
            groups = [(p, members) for p, members in groups if p in partitions]
            await publisher.shared(
                cls.name,
                ts,
                shared,
                tick=seq,
                by_topic=cls.shared_by_topic,
                done=False,
                partitions=sorted(partitions),
            )
            shared = {}
        for i, (_partition, members) in enumerate(groups, 1):
            for user_id, instance in members:
                component = instance.component
                async with instance.lock:
                    try:  # tick handlers do no I/O: no unit of work
                        result = await component.on_ws_message(message)
                        changes = changes_after(instance, result)
                    except Exception:
                        log.exception("%s.on_ws_message(price_tick) failed", cls.name)
                        continue
                    topics = component.topics() if changes.full else None
                    if topics is not None:
                        self.forget_topics(cls.name)
                    batch.add(user_id, changes, topics=topics)
            if shared and len(batch):
                # before the first partition: a page's frame holds its prices and its P&L
                await publisher.shared(
                    cls.name, ts, shared, tick=seq, by_topic=cls.shared_by_topic, done=False
                )
                shared = {}
            await batch.send()
            if i % PARTITIONS_PER_WRITE == 0:
                # let the NATS client write what is done: the gateway takes it in on
                # another core while this pass goes on, instead of all of it at the end
                await asyncio.sleep(0)
        return shared

    def _by_partition(self, name: str) -> list[tuple[int, list[tuple[int, LiveInstance]]]]:
        """The live instances of component ``name``, grouped by their user's partition, in
        ascending partition order (every service the same: a page whose partition one
        component has done is soon done by the others)."""
        groups = self._groups.get(name)
        if groups is None:
            by: dict[int, list[tuple[int, LiveInstance]]] = {}
            for user_id, instance in self._live.instances.of(name).items():
                by.setdefault(wire.partition_of(user_id), []).append((user_id, instance))
            groups = self._groups[name] = [(p, by[p]) for p in sorted(by)]
        return groups

    def _shown(self, cls: type[Component], tickers: set[str]) -> list[str]:
        """The changed topics whose shared parts this replica publishes.

        By default those some page of this replica's users shows: the gateway gives a page
        only the shared parts of the replica that owns its user, so a page's numbers
        always come from one price book, even while a partition changes hands. A component
        whose shared parts stand alone (``shared_by_topic``) has each topic rendered once,
        by the owner of the topic's partition: for the pages it knows of when it owns
        every partition, else for every topic it owns (it cannot know the others' pages).
        """
        live = self._live
        if cls.shared_by_topic and live.leases is not None:
            owned = live.leases.owned
            if len(owned) < wire.LIVE_PARTITIONS:
                return [t for t in tickers if wire.topic_partition(t) in owned]
        watched = self._watched_topics(cls)
        return [t for t in tickers if t in watched]

    def _watched_topics(self, cls: type[Component]) -> set[str]:
        """The topics some live instance of ``cls`` shows: only those are rendered."""
        watched = self._watched.get(cls.name)
        if watched is None:
            watched = set()
            for instance in self._live.instances.of(cls.name).values():
                watched.update(instance.component.topics())
            self._watched[cls.name] = watched
        return watched
