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
