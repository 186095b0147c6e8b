"""Fan-out of ``ui.*`` messages to this gateway's sockets, from one NATS subscription.

Per-user updates (``ui.<partition>.<component>``, batched) go to every socket of their
user, or to one socket when they name its session (a connecting tab's full render).
Shared parts (``ui.shared.<component>``, keyed by topic) are checked once and handed to
every socket whose user's page shows that topic, as the user's latest full render of the
component declared. Writing into a socket's buffer never waits, so a slow socket never
delays another (DESIGN.md §3.3).

Frames follow ticks: tick-driven parts wait in their sockets' buffers until
:class:`~gateway.ticks.TickGate` says every producer is done with the tick, or with the
socket's partition, so a socket gets one frame per tick.

Fencing (DESIGN.md §8): every per-user message names the epoch of the partition lease it
was published under. The newest epoch seen per (component, partition) wins and anything
older is dropped, so a deposed owner that comes back late cannot overwrite its successor;
the producer of the newest accepted message is the partition's owner. By default each
replica publishes the shared parts its own users show, and a page gets a shared part only
from its user's owner: a page's numbers come from one price book, also while a partition
changes hands (a dead owner's pages freeze whole, then the new owner's full render
replaces them). Shared parts that stand alone (a message with ``epochs``: the watchlist's
quote cells) come once per topic from the owner of the topic's partition, for every page,
fenced by that partition's epoch. A gap in the owner's ``seq`` on a partition means lost updates:
``on_resync`` asks for full renders of that partition.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol

from gateway.buffer import PartBuffer, message_ts_ms, now_ms, prepare_groups
from gateway.metrics import GatewayMetrics
from gateway.ticks import EXPECT_S, RELEASE_TURN, TickGate, release_in_turns
from shared import wire

__all__ = [
    "DELIVER_TURN",
    "EXPECT_S",
    "RELEASE_TURN",
    "REQUEST_TURN_S",
    "Fanout",
    "LiveSocket",
    "release_in_turns",
]

DELIVER_TURN = 512  # puts of shared parts per turn of the event loop (~1 ms)
REQUEST_TURN_S = 0.002  # while a request waits for a service: a turn of the loop this often
RESYNC_EVERY_S = 1.0  # at most one resync request per (component, partition) this often
Resync = Callable[[str, int], None]


class LiveSocket(Protocol):
    user_id: int
    session_id: str
    buffer: PartBuffer


class Fanout:
    def __init__(self, metrics: GatewayMetrics | None = None, *, tick_wait_s: float = 0.15) -> None:
        self._metrics = metrics
        self._sockets: dict[int, set[LiveSocket]] = defaultdict(set)
        self._by_session: dict[str, LiveSocket] = {}
        self._topics: dict[tuple[int, str], frozenset[str]] = {}
        self._watchers: dict[tuple[str, str], set[int]] = defaultdict(set)
        # a component is done with a tick: (component, the tick's ts, when its service sent
        # the marker), both epoch ms when the message says
        self.on_tick_done: Callable[[str, float | None, float | None], None] | None = None
        self.on_resync: Resync | None = None
        # a full render addressed to one socket arrived: (its session id, component)
        self.on_rendered: Callable[[str, str], None] | None = None
        self._partitions: dict[int, int] = {}  # user → live partition
        self._epochs: dict[tuple[str, int], int] = {}  # newest epoch per partition
        self._seqs: dict[tuple[str, int], tuple[str, int]] = {}  # last (src, seq)
        self._owners: dict[tuple[str, int], str] = {}  # producer of the newest accepted
        self._resynced: dict[tuple[str, int], float] = {}
        self.ticks = TickGate(self.owner, tick_wait_s)
        self._waiting = 0  # requests waiting for a service's answer (:meth:`serving`)
        self._turned = 0.0

    def __len__(self) -> int:
        return len(self._by_session)

    def add(self, socket: LiveSocket) -> None:
        self._partitions[socket.user_id] = wire.partition_of(socket.user_id)
        self._sockets[socket.user_id].add(socket)
        self._by_session[socket.session_id] = socket

    def remove(self, socket: LiveSocket) -> None:
        self._by_session.pop(socket.session_id, None)
        self.ticks.forget(socket, self._partitions.get(socket.user_id, -1))
        sockets = self._sockets.get(socket.user_id)
        if sockets is None:
            return
        sockets.discard(socket)
        if not sockets:
            del self._sockets[socket.user_id]
            self._partitions.pop(socket.user_id, None)
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

    @contextlib.contextmanager
    def serving(self) -> Iterator[None]:
        """While a trader's request waits for a service (an order, a page's fragments).

        The NATS client hands this handler every message it has read without returning
        to the event loop, and after a tick that is a burst of tens of milliseconds: an
        answer that arrived meanwhile waited for its end (60 ms on average at 500
        traders in a slow hour, about as long as the orders service took). While a request
        waits, each message first gives the loop a turn every :data:`REQUEST_TURN_S`.
        Only then: the turns also let the sockets' writes in between, and reading the
        tick later would make the pace (:mod:`gateway.pace`) see the gateway as late."""
        self._waiting += 1
        try:
            yield
        finally:
            self._waiting -= 1

    async def on_ui(self, subject: str, message: dict[str, Any]) -> None:
        """The handler of the gateway's one ``ui.>`` subscription."""
        if self._waiting and time.monotonic() - self._turned >= REQUEST_TURN_S:
            await asyncio.sleep(0)
            self._turned = time.monotonic()
        tokens = subject.split(".")
        component = str(message.get("component", ""))
        if len(tokens) != 3 or tokens[2] != component or component not in wire.ID_PREFIX:
            return  # only the dashboard's components, each on its own subject
        ts = message_ts_ms(message.get("ts"))
        if ts is not None and self._metrics is not None:
            self._metrics.latency_received.observe(max(0.0, now_ms() - ts) / 1000)
        tick = message.get("tick")
        if not isinstance(tick, int):
            tick = None  # not tick-driven: urgent
        src = str(message.get("src", ""))
        if tokens[1] == wire.UI_SHARED:
            topics = message.get("topics")
            if not isinstance(topics, dict):
                topics = {}
            epochs = message.get("epochs")
            if isinstance(epochs, dict):  # parts for every page, one producer per topic
                self.ticks.by_topic.add(component)
                wanted = self._shared_by_topic(component, epochs, topics)
            else:
                wanted = self._shared(component, src, topics)
            await self._deliver(component, topics, wanted, ts, tick)
            if isinstance(tick, int) and message.get("done") is not False:
                self.ticks.done(component, src, tick)
                if self.on_tick_done is not None:
                    self.on_tick_done(component, ts, message_ts_ms(message.get("sent")))
            elif isinstance(tick, int) and isinstance(message.get("partitions"), list):
                self.ticks.done_but(component, src, tick, message["partitions"])
        elif tokens[1].isdigit():
            partition = int(tokens[1])
            if self._admit(component, partition, src, message):
                self._updates(component, message.get("updates"), ts, tick)
                if tick is not None:
                    self.ticks.partition_done(component, src, partition, tick)

    def _dropped(self, reason: str) -> None:
        if self._metrics is not None:
            self._metrics.parts_dropped.labels(reason).inc()

    def owner(self, component: str, partition: int) -> str | None:
        """The producer of the newest accepted per-user message of the partition."""
        return self._owners.get((component, partition))

    def _fenced(self, component: str, partition: int, epoch: Any) -> bool:
        """Whether ``epoch`` is older than the newest seen for this partition."""
        if not isinstance(epoch, int):
            epoch = 0
        key = (component, partition)
        newest = self._epochs.get(key, 0)
        if epoch < newest:
            if self._metrics is not None:
                self._metrics.fenced.inc()
            return True
        if epoch > newest:
            self._epochs[key] = epoch
        return False

    def _admit(self, component: str, partition: int, src: str, message: dict[str, Any]) -> bool:
        """A per-user message passes the fence; a gap in its producer's ``seq`` asks for
        the partition's full renders."""
        if self._fenced(component, partition, message.get("epoch")):
            return False
        key = (component, partition)
        self._owners[key] = src
        seq = message.get("seq")
        if not isinstance(seq, int):
            return True
        last = self._seqs.get(key)
        self._seqs[key] = (src, seq)
        if last is None or last[0] != src:
            return True
        if seq <= last[1]:  # a duplicate or a late one from the same producer
            self._seqs[key] = last
            return False
        if seq > last[1] + 1:
            self._gap(component, partition)
        return True

    def _gap(self, component: str, partition: int) -> None:
        if self._metrics is not None:
            self._metrics.gaps.inc()
        now = time.monotonic()
        key = (component, partition)
        if now - self._resynced.get(key, -RESYNC_EVERY_S) < RESYNC_EVERY_S:
            return
        self._resynced[key] = now
        if self.on_resync is not None:
            self.on_resync(component, partition)

    def _put(
        self,
        socket: LiveSocket,
        component: str,
        parts: list[tuple[str, str]],
        ts: float | None,
        *,
        full: bool = False,
        tick: int | None = None,
    ) -> None:
        if tick is None or full:  # urgent
            socket.buffer.put_prepared(component, parts, ts, full=full)
            return
        socket.buffer.put_tick(parts, ts)
        if parts:
            self.ticks.hold(socket, self._partitions.get(socket.user_id, -1), tick)

    def _updates(self, component: str, updates: Any, ts: float | None, tick: int | None) -> None:
        """A per-user message: each update to the sockets it is for, its parts checked
        once (and screened together with the other updates')."""
        targeted: dict[int, tuple[tuple[LiveSocket, ...], bool]] = {}
        for i, update in enumerate(updates if isinstance(updates, list) else ()):
            if not isinstance(update, dict):
                continue
            user_id = update.get("user")
            if not isinstance(user_id, int):
                continue
            sockets = self._sockets.get(user_id)
            if not sockets:
                continue
            full = bool(update.get("full"))
            session = update.get("session")
            if session is not None:
                target = self._by_session.get(str(session))
                if target is None or target.user_id != user_id:
                    continue
                targets: tuple[LiveSocket, ...] = (target,)
                if full and self.on_rendered is not None:
                    self.on_rendered(target.session_id, component)
            else:
                targets = tuple(sockets)
            topics = update.get("topics")
            if full and isinstance(topics, list):
                self._set_topics(user_id, component, frozenset(str(t) for t in topics))
            targeted[i] = (targets, full)
        if not targeted:
            return
        raw = {i: updates[i].get("parts") for i in targeted}
        for i, parts in prepare_groups(component, raw, self._dropped).items():
            targets, full = targeted[i]
            for socket in targets:
                self._put(socket, component, parts, ts, full=full, tick=tick)

    def _shared(self, component: str, src: str, topics: dict[str, Any]) -> dict[str, list[int]]:
        """Topic → the users that get its parts from ``src``: those whose owner it is."""
        owned: dict[int, bool] = {}  # partition → whether ``src`` owns it (once per message)
        wanted: dict[str, list[int]] = {}  # topic → the users it goes to
        for topic in topics:
            users = self._watchers.get((component, topic))
            if not users:
                continue
            to = []
            for user_id in users:
                partition = self._partitions.get(user_id)
                if partition is None:
                    continue
                mine = owned.get(partition)
                if mine is None:
                    mine = owned[partition] = self.owner(component, partition) == src
                if mine:
                    to.append(user_id)
            if to:
                wanted[topic] = to
        return wanted

    def _shared_by_topic(
        self, component: str, epochs: dict[str, Any], topics: dict[str, Any]
    ) -> dict[str, list[int]]:
        """Parts that stand alone: each topic from the owner of its partition, for every
        page that shows it, unless a newer epoch of that partition was seen."""
        wanted: dict[str, list[int]] = {}
        for topic in topics:
            users = self._watchers.get((component, topic))
            if not users:
                continue
            partition = wire.topic_partition(topic)
            if not self._fenced(component, partition, epochs.get(str(partition))):
                wanted[topic] = list(users)  # the watchers may change while delivering
        return wanted

    async def _deliver(
        self,
        component: str,
        topics: dict[str, Any],
        wanted: Mapping[str, Iterable[int]],
        ts: float | None,
        tick: int | None,
    ) -> None:
        """Shared parts, checked once (all topics screened together), to each socket of the
        users that get them, :data:`DELIVER_TURN` sockets per turn of the event loop: a
        tick's shared parts go to thousands of sockets (~6 ms, up to 30 at a thousand
        traders), and a request (an order) waited that long at each of its awaits.
        Nothing is allocated per user or socket: at hundreds of sockets per message, a
        list each made the garbage collector run several times a second (gathering each
        socket's parts of a message into one put measured no faster)."""
        if not wanted:
            return
        prepared = prepare_groups(component, {t: topics[t] for t in wanted}, self._dropped)
        sockets = self._sockets
        turn = DELIVER_TURN
        for topic, users in wanted.items():
            parts = prepared[topic]
            if not parts:
                continue
            for user_id in users:
                for socket in sockets.get(user_id, ()):
                    self._put(socket, component, parts, ts, tick=tick)
                    turn -= 1
                if turn <= 0:  # between users: their sockets are looked up afresh
                    await asyncio.sleep(0)
                    turn = DELIVER_TURN
