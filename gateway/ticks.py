"""When a socket's tick-driven parts may go: one frame per tick, as soon as it is complete.

A component's ``ui.shared`` message carrying a tick's ``seq`` is the last it sends for that
tick (unless it says ``done: false``: the tick's shared parts, sent before its
per-partition messages, and with ``partitions`` the only ones that follow), and a per-user
message carrying it is the last its producer sends that partition for the tick. A socket
holding parts of a tick is released once every producer that follows ticks (each replica
of each component heard from in the last ``EXPECT_S``) is done with that tick, or done with
the socket's partition: for a component whose parts a page gets from its user's owner only,
the owner's message for the partition is enough (other replicas send that page nothing); a
component whose shared parts stand alone must be done with the tick. So a socket gets one
frame per tick, as soon as its last part is in, while the producers' passes go on over
later partitions; and a frame never mixes one replica's newer numbers with another's
older ones. A producer that never says "done" delays nobody more than ``tick_wait_s``.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from shared import wire

__all__ = ["EXPECT_S", "RELEASE_TURN", "Releasable", "TickGate", "release_in_turns"]

RELEASE_TURN = 64  # sockets released per turn of the event loop
# a producer silent about ticks for this long is not waited for: longer than the slowest
# pace, at which a producer says "done" every PACE_MAX_INTERVAL_S
EXPECT_S = wire.PACE_MAX_INTERVAL_S + 1.0

Owner = Callable[[str, int], "str | None"]


class _Buffer(Protocol):
    def release(self) -> None: ...


class Releasable(Protocol):
    @property
    def buffer(self) -> _Buffer: ...


class TickGate:
    """Which producers are done with which tick (and partition), and the sockets waiting."""

    def __init__(
        self,
        owner: Owner,
        tick_wait_s: float = 0.15,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._owner = owner  # (component, partition) → the producer that owns it
        self.tick_wait_s = tick_wait_s
        self._clock = clock
        self._fallback: asyncio.TimerHandle | None = None
        # (component, producer) → (last tick done, when)
        self.done_with: dict[tuple[str, str], tuple[int, float]] = {}
        # (component, producer) → partition → the last tick it is done with there
        self._done_in: dict[tuple[str, str], dict[int, int]] = defaultdict(dict)
        self.by_topic: set[str] = set()  # components whose shared parts stand alone
        # per partition, sockets holding tick-driven parts → the newest tick among them
        self._waiting: dict[int, dict[Releasable, int]] = defaultdict(dict)

    def hold(self, socket: Releasable, partition: int, tick: int) -> None:
        """``socket`` holds parts of ``tick``: it waits until the tick is done."""
        waiting = self._waiting[partition]
        newest = waiting.get(socket)
        if newest is None or tick > newest:
            waiting[socket] = tick
        if self._fallback is None:  # a component that never says "done" delays no one
            loop = asyncio.get_running_loop()
            self._fallback = loop.call_later(self.tick_wait_s, self._release_waiting)

    def forget(self, socket: Releasable, partition: int) -> None:
        waiting = self._waiting.get(partition)
        if waiting is None:
            return
        waiting.pop(socket, None)
        if not waiting:  # (an empty entry kept the fallback armed for nobody)
            del self._waiting[partition]
            if not self._waiting and self._fallback is not None:
                self._fallback.cancel()
                self._fallback = None

    def done(self, component: str, src: str, tick: int) -> None:
        """The producer is done with ``tick`` (its marker)."""
        now = self._clock()
        key = (component, src)
        self.done_with[key] = (max(tick, self.done_with.get(key, (tick, 0))[0]), now)
        self._done_in.pop(key, None)  # done with the tick: with each partition of it
        expired = [k for k, (_seq, at) in self.done_with.items() if now - at >= EXPECT_S]
        for k in expired:
            del self.done_with[k]
            self._done_in.pop(k, None)
        self._release(list(self._waiting))

    def done_but(self, component: str, src: str, tick: int, following: list[Any]) -> None:
        """The producer sends ``tick`` to the ``following`` partitions only (a slice of
        a rate-limited component): it is done with every other partition."""
        key = (component, src)
        if key not in self.done_with:
            return
        done_in, rest = self._done_in[key], set(following)
        for partition in range(wire.LIVE_PARTITIONS):
            if partition not in rest and tick > done_in.get(partition, -1):
                done_in[partition] = tick
        self._release([p for p in list(self._waiting) if p not in rest])

    def partition_done(self, component: str, src: str, partition: int, tick: int) -> None:
        """The producer's last message of ``tick`` for ``partition`` is in."""
        key = (component, src)
        if key not in self.done_with:
            return  # not (yet) known to follow ticks: its done marker counts
        done_in = self._done_in[key]
        if tick > done_in.get(partition, -1):
            done_in[partition] = tick
            self._release([partition])

    def _done_through(self, partition: int) -> float:
        """The newest tick every producer is done with, for the pages of ``partition``."""
        through = float("inf")
        for key, (done, _at) in self.done_with.items():
            component, src = key
            if component not in self.by_topic:
                owner = self._owner(component, partition)
                if owner is not None and owner != src:
                    continue  # another replica's partition: it sends these pages nothing
                if owner is not None:
                    done = max(done, self._done_in.get(key, {}).get(partition, done))
            through = min(through, done)
        return through

    def _release(self, partitions: Iterable[int]) -> None:
        """Release the sockets of ``partitions`` whose newest tick is done."""
        ready: list[Releasable] = []
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


def release_in_turns(sockets: list[Releasable]) -> None:
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
