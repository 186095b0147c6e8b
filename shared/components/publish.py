"""Publishing ``ui.*`` messages: per-user updates batched per partition, shared parts.

A tick changes the pages of many users at once; their updates leave as one message per
(partition, component) rather than one per user, so NATS, JSON and the gateway handle a
few dozen messages per tick instead of thousands. Every message carries the publishing
instance's ``src`` (unique per process start), a ``seq`` that grows by one per message on
its subject, and per-user messages the ``epoch`` of the partition lease they were
published under. A partition this replica does not own (or can no longer be sure it owns)
is not published at all: self-fencing. Shared parts go only to the pages of users whose
owner published them (the gateway checks ``src``), so they need no epoch of their own.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import defaultdict
from typing import Any, Protocol

from shared import wire
from shared.bus import MessageBus
from shared.components.metrics import ComponentMetrics
from shared.components.rendering import Changes

__all__ = ["Fence", "UiBatch", "UiPublisher"]

log = logging.getLogger(__name__)


class Fence(Protocol):
    """Which partitions this replica may publish, under which epoch
    (:class:`~shared.leases.PartitionLeases`)."""

    def owns(self, partition: int) -> bool: ...

    def epoch(self, partition: int) -> int: ...


class UiPublisher:
    def __init__(
        self, bus: MessageBus, metrics: ComponentMetrics | None = None, fence: Fence | None = None
    ) -> None:
        self.bus = bus
        self.src = secrets.token_hex(6)
        self.fence = fence
        self._seq: dict[str, int] = defaultdict(int)
        self._metrics = metrics

    def count(self, component: str, updates: list[dict[str, Any]]) -> None:
        """Count the per-user updates of one published message."""
        if self._metrics is None:
            return
        full = sum(1 for u in updates if u["full"])
        parts = sum(len(u["parts"]) for u in updates)
        self._metrics.publishes.labels(component, "true").inc(full)
        self._metrics.publishes.labels(component, "false").inc(len(updates) - full)
        self._metrics.parts.labels(component).inc(parts)

    def owns(self, partition: int) -> bool:
        return self.fence is None or self.fence.owns(partition)

    def epoch(self, partition: int) -> int:
        return self.fence.epoch(partition) if self.fence is not None else 0

    def batch(self, component: str, ts: Any, *, tick: Any = None) -> UiBatch:
        """Updates for many users; ``tick`` (a tick's ``seq``) marks them tick-driven."""
        return UiBatch(self, component, ts, tick)

    async def shared(
        self,
        component: str,
        ts: Any,
        topics: dict[str, list[Any]],
        *,
        tick: Any = None,
        by_topic: bool = False,
        done: bool = True,
        partitions: list[int] | None = None,
    ) -> None:
        """One message with the shared parts of every topic that changed. With ``tick``
        it is sent even with no topics: it says the component is done with that tick,
        unless ``done`` is false (the tick's shared parts, sent before its per-partition
        messages; the marker follows them). ``partitions``: the only partitions whose
        messages follow (with ``done`` false): the component is done with all others.
        ``by_topic``: the parts are for every page, each topic under the epoch of its
        partition (``epochs``), so a deposed owner's late parts are dropped."""
        if not topics and tick is None:
            return
        wire_topics: dict[str, list[dict[str, str]]] = {}
        epochs: dict[str, int] = {}
        for topic, parts in topics.items():
            if by_topic:
                partition = wire.topic_partition(topic)
                if not self.owns(partition):
                    continue
                epochs[str(partition)] = self.epoch(partition)
            wire_topics[topic] = [p.to_wire() for p in parts]
        payload: dict[str, Any] = {"component": component, "ts": ts, "topics": wire_topics}
        if by_topic:
            payload["epochs"] = epochs
        if tick is not None:
            payload["tick"] = tick
            if not done:
                payload["done"] = False
                if partitions is not None:
                    payload["partitions"] = partitions
        await self._send(wire.ui_shared_subject(component), payload)

    async def _send(self, subject: str, payload: dict[str, Any]) -> bool:
        self._seq[subject] += 1
        payload["src"], payload["seq"] = self.src, self._seq[subject]
        payload["sent"] = round(time.time() * 1000, 1)  # the gateway tells its lag from ours
        try:
            await self.bus.publish(subject, payload)
        except Exception:
            log.exception("publishing %s failed", subject)
            return False
        return True


class UiBatch:
    """The updates of one component for many users, sent per partition by :meth:`send`."""

    def __init__(self, publisher: UiPublisher, component: str, ts: Any, tick: Any = None) -> None:
        self._publisher, self.component, self.ts, self.tick = publisher, component, ts, tick
        self._by_partition: dict[int, list[dict[str, Any]]] = defaultdict(list)

    def add(
        self,
        user_id: int,
        changes: Changes,
        *,
        session: str | None = None,
        topics: list[str] | None = None,
    ) -> None:
        if not changes:
            return
        update = wire.ui_update(
            user_id,
            [p.to_wire() for p in changes.parts],
            full=changes.full,
            session=session,
            topics=topics if changes.full else None,
        )
        self._by_partition[wire.partition_of(user_id)].append(update)

    def nothing(self, user_id: int, session: str) -> None:
        """The component shows nothing on that socket's page (its user may not see it): an
        empty full render, so the gateway does not wait for one."""
        update = wire.ui_update(user_id, [], full=True, session=session)
        self._by_partition[wire.partition_of(user_id)].append(update)

    def __len__(self) -> int:
        return sum(len(u) for u in self._by_partition.values())

    async def send(self) -> None:
        publisher = self._publisher
        for partition, updates in self._by_partition.items():
            if not publisher.owns(partition):
                continue  # deposed, or unsure: the new owner publishes these users
            payload = {
                "component": self.component,
                "ts": self.ts,
                "epoch": publisher.epoch(partition),
                "updates": updates,
            }
            if self.tick is not None:  # tick-driven: the gateway sends it with its tick
                payload["tick"] = self.tick
            subject = wire.ui_partition_subject(partition, self.component)
            if await publisher._send(subject, payload):
                publisher.count(self.component, updates)
        self._by_partition.clear()
