"""Fan-out of ``ui.*`` messages to this gateway's sockets, from one NATS subscription.

Per-user updates (``ui.<partition>.<component>``, batched) go to every socket of their
user, or to one socket when they name its session (a connecting tab's full render).
Shared parts (``ui.shared.<component>``, keyed by topic) are checked once and handed to
every socket whose user's page shows that topic, as the user's latest full render of the
component declared. Writing into a socket's buffer never waits, so a slow socket never
delays another (DESIGN.md §3.3).

Frames follow ticks: a component's ``ui.shared`` message carrying a tick's ``seq`` is the
last it sends for that tick (unless it says ``done: false``: the tick's shared parts, sent
before its per-partition messages, and with ``partitions`` the only ones that follow), and
a per-user message carrying it is the last its producer sends that partition for the tick.
A socket holding parts of a tick is told to send them once every producer that follows
ticks (each replica of each component heard from in the last ``EXPECT_S``) is done with
that tick, or done with the socket's partition: for a component whose parts a page gets
from its user's owner only, the owner's message for the partition is enough (other replicas
send that page nothing); a component whose shared parts stand alone must be done with the
tick. So a socket gets one frame per tick, as soon as its last part is in, while the
producers' passes go on over later partitions.

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
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from gateway.buffer import PartBuffer, message_ts_ms, now_ms, prepare_groups
from gateway.metrics import GatewayMetrics
from shared import wire

__all__ = ["DELIVER_TURN", "EXPECT_S", "Fanout", "LiveSocket"]

RELEASE_TURN = 64  # sockets released per turn of the event loop
DELIVER_TURN = 512  # puts of shared parts per turn of the event loop (~1 ms)
EXPECT_S = 2.0  # a producer silent about ticks for this long is not waited for
RESYNC_EVERY_S = 1.0  # at most one resync request per (component, partition) this often
Resync = Callable[[str, int], None]


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
        # (component, producer) → (last tick done, when)
        self._done: dict[tuple[str, str], tuple[int, float]] = {}
        # (component, producer) → partition → the last tick it is done with there
        self._done_in: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
        self._by_topic: set[str] = set()  # components whose shared parts stand alone
        self.on_tick_done: Callable[[str, float | None], None] | None = None
        self.on_resync: Resync | None = None
        self._partitions: dict[int, int] = {}  # user → live partition
        self._epochs: dict[tuple[str, int], int] = {}  # newest epoch per partition
        self._seqs: dict[tuple[str, int], tuple[str, int]] = {}  # last (src, seq)
        self._owners: dict[tuple[str, int], str] = {}  # producer of the newest accepted
        self._resynced: dict[tuple[str, int], float] = {}
        # per partition, sockets holding tick-driven parts → the newest tick among them
        self._waiting: dict[int, dict[LiveSocket, int]] = defaultdict(dict)

    def __len__(self) -> int:
        return len(self._by_session)

    def add(self, socket: LiveSocket) -> None:
        self._partitions[socket.user_id] = wire.partition_of(socket.user_id)
        self._sockets[socket.user_id].add(socket)
        self._by_session[socket.session_id] = socket

    def remove(self, socket: LiveSocket) -> None:
        self._by_session.pop(socket.session_id, None)
        waiting = self._waiting.get(self._partitions.get(socket.user_id, -1))
        if waiting is not None:
            waiting.pop(socket, None)
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
        if not isinstance(tick, int):
            tick = None  # not tick-driven: urgent
        src = str(message.get("src", ""))
        if tokens[1] == wire.UI_SHARED:
            topics = message.get("topics")
            if not isinstance(topics, dict):
                topics = {}
            epochs = message.get("epochs")
            if isinstance(epochs, dict):  # parts for every page, one producer per topic
                self._by_topic.add(component)
                wanted = self._shared_by_topic(component, epochs, topics)
            else:
                wanted = self._shared(component, src, topics)
            await self._deliver(component, topics, wanted, ts, tick)
            if isinstance(tick, int) and message.get("done") is not False:
                self._tick_done(component, src, tick)
                if self.on_tick_done is not None:
                    self.on_tick_done(component, ts)
            elif isinstance(tick, int) and isinstance(message.get("partitions"), list):
                self._done_but(component, src, tick, message["partitions"])
        elif tokens[1].isdigit():
            partition = int(tokens[1])
            if self._admit(component, partition, src, message):
                self._updates(component, message.get("updates"), ts, tick)
                if tick is not None:
                    self._partition_done(component, src, partition, tick)

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

    def _tick_done(self, component: str, src: str, tick: int) -> None:
        now = time.monotonic()
        key = (component, src)
        self._done[key] = (max(tick, self._done.get(key, (tick, 0))[0]), now)
        self._done_in.pop(key, None)  # done with the tick: with each partition of it
        expired = [k for k, (_seq, at) in self._done.items() if now - at >= EXPECT_S]
        for k in expired:
            del self._done[k]
            self._done_in.pop(k, None)
        self._release(list(self._waiting))

    def _done_but(self, component: str, src: str, tick: int, following: list[Any]) -> None:
        """The producer sends ``tick`` to the ``following`` partitions only (a slice of
        a rate-limited component): it is done with every other partition."""
        key = (component, src)
        if key not in self._done:
            return
        done_in, rest = self._done_in[key], set(following)
        for partition in range(wire.LIVE_PARTITIONS):
            if partition not in rest and tick > done_in.get(partition, -1):
                done_in[partition] = tick
        self._release([p for p in list(self._waiting) if p not in rest])

    def _partition_done(self, component: str, src: str, partition: int, tick: int) -> None:
        """The producer's last message of ``tick`` for ``partition`` is in."""
        key = (component, src)
        if key not in self._done:
            return  # not (yet) known to follow ticks: its done marker counts
        done_in = self._done_in[key]
        if tick > done_in.get(partition, -1):
            done_in[partition] = tick
            self._release([partition])

    def _done_through(self, partition: int) -> float:
        """The newest tick every producer is done with, for the pages of ``partition``.

        A producer counts as done when it is done with the tick; or, for a component whose
        pages get its parts from their user's owner only, when the partition's owner is
        done with the partition (another replica sends these pages nothing). Until every
        producer is done, a socket waits, so a frame never mixes one replica's newer
        numbers with another's older ones."""
        through = float("inf")
        for key, (done, _at) in self._done.items():
            component, src = key
            if component not in self._by_topic:
                owner = self._owners.get((component, partition))
                if owner is not None and owner != src:
                    continue
                if owner is not None:
                    done = max(done, self._done_in.get(key, {}).get(partition, done))
            through = min(through, done)
        return through

    def _release(self, partitions: Iterable[int]) -> None:
        """Release the sockets of ``partitions`` whose newest tick is done."""
        ready: list[LiveSocket] = []
        for partition in partitions:
            waiting = self._waiting.get(partition)
            if not waiting:
                continue
            through = self._done_through(partition)
            sockets = [s for s, newest in waiting.items() if newest <= through]
            for socket in sockets:
                del waiting[socket]
            if not waiting:
                del self._waiting[partition]
            ready += sockets
        release_in_turns(ready)
        if not self._waiting and self._fallback is not None:
            self._fallback.cancel()
            self._fallback = None

    def _release_waiting(self) -> None:
        """Every socket holding tick-driven parts may send them (a producer is late)."""
        self._fallback = None
        release_in_turns([s for waiting in self._waiting.values() for s in waiting])
        self._waiting.clear()

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
            waiting = self._waiting[self._partitions.get(socket.user_id, -1)]
            newest = waiting.get(socket)
            if newest is None or tick > newest:
                waiting[socket] = tick
            if self._fallback is None:  # a component that never says "done" delays no one
                loop = asyncio.get_running_loop()
                self._fallback = loop.call_later(self.tick_wait_s, self._release_waiting)

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


def release_in_turns(sockets: list[LiveSocket]) -> None:
    """Let these sockets send their frames, :data:`RELEASE_TURN` per turn of the event
    loop. Released all at once, a tick's thousand sends ran back to back (~50 ms) before
    the loop read anything else: every request (an order) waited that long at each of
    its awaits. In turns, what arrived meanwhile is served between them."""
    for socket in sockets[:RELEASE_TURN]:
        socket.buffer.release()
    rest = sockets[RELEASE_TURN:]
    if rest:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a synchronous caller: no loop to take turns on
            release_in_turns(rest)
            return
        # a timer, not call_soon: what the loop reads from its sockets is queued before it
        loop.call_later(0, release_in_turns, rest)
