"""The gateway's tick gate when a producer dies in the middle of a tick's pass."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from gateway.ticks import EXPECT_S, TickGate


@dataclass
class Buffer:
    released: int = 0

    def release(self) -> None:
        self.released += 1


@dataclass(eq=False)
class Socket:
    buffer: Buffer = field(default_factory=Buffer)


async def test_a_producer_dying_mid_pass_holds_the_rest_no_longer_than_the_tick_wait() -> None:
    now = [1000.0]
    gate = TickGate(lambda component, partition: "p1", tick_wait_s=0.05, clock=lambda: now[0])
    gate.done("portfolio", "p1", 1)
    done_first, never_reached = Socket(), Socket()
    gate.hold(done_first, 1, 2)
    gate.hold(never_reached, 2, 2)

    gate.partition_done("portfolio", "p1", 1, 2)  # then p1 dies: no partition 2, no marker
    assert done_first.buffer.released == 1 and never_reached.buffer.released == 0
    await asyncio.sleep(0.15)
    assert never_reached.buffer.released == 1  # the tick wait let it go

    # silent for EXPECT_S, p1 is no longer waited for: the next tick goes when the
    # producers still alive are done with it
    now[0] += EXPECT_S + 0.1
    gate.done("watchlist", "w1", 2)
    later = Socket()
    gate.hold(later, 2, 3)
    gate.done("watchlist", "w1", 3)
    assert later.buffer.released == 1
    assert ("portfolio", "p1") not in gate.done_with


async def test_a_socket_that_closed_while_holding_does_not_keep_the_fallback_armed() -> None:
    """The fallback is one timer for every holder, armed at the first hold. A closed
    socket's empty entry kept it armed for nobody: it then fired under the next holder,
    milliseconds into its wait, and sent it part of a tick."""
    gate = TickGate(lambda component, partition: "p1", tick_wait_s=0.1)
    gate.done("portfolio", "p1", 1)
    closed = Socket()
    gate.hold(closed, 1, 2)
    gate.forget(closed, 1)  # closed before the tick was done
    await asyncio.sleep(0.07)
    later = Socket()
    gate.hold(later, 3, 2)  # a fresh wait: the full tick wait from now
    await asyncio.sleep(0.06)  # past the first hold's tick wait, not this one's
    assert later.buffer.released == 0
    await asyncio.sleep(0.1)
    assert later.buffer.released == 1  # the producer never said done: its own wait


def test_a_producer_at_the_slowest_pace_is_still_waited_for() -> None:
    from shared import wire

    assert EXPECT_S > wire.PACE_MAX_INTERVAL_S  # it says "done" that seldom, and is alive
