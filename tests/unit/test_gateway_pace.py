"""The gateway's pace: every tick while the loop keeps time, slower while it runs late."""

from __future__ import annotations

import asyncio
from typing import Any

from gateway.pace import Pace, announce_forever
from shared import wire
from shared.bus import InMemoryBus
from tests.support import wait_until


def test_a_late_loop_slows_frames_down_and_a_punctual_one_speeds_them_up_again() -> None:
    pace = Pace(0.1, 0.5)
    assert pace.interval_s == 0.1 and not pace.slowed
    for _ in range(3):
        pace.observe(0.002)
    assert pace.interval_s == 0.1
    for _ in range(5):  # timers firing 150 ms late: overloaded
        pace.observe(0.15)
    assert pace.slowed and pace.interval_s == 0.5
    pace.observe(0.05)  # between the thresholds: no flapping
    assert pace.slowed
    for _ in range(10):
        pace.observe(0.0)
    assert not pace.slowed and pace.interval_s == 0.1


def test_ticks_reaching_the_gateway_old_slow_frames_down_though_the_loop_keeps_time() -> None:
    pace = Pace(0.1, 0.5)
    for _ in range(20):  # the usual: a tick is done ~150 ms after the pricefeed stamped it
        pace.observe(0.001)
        pace.observe_age(0.15)
    assert not pace.slowed
    for _ in range(5):  # ticks read seconds late: the gateway is behind the feed
        pace.observe(0.001)
        pace.observe_age(3.0)
    assert pace.slowed and pace.interval_s == 0.5
    pace.observe_age(0.3)  # between the thresholds: no flapping
    assert pace.slowed
    for _ in range(10):
        pace.observe_age(0.1)
    assert not pace.slowed
    for _ in range(10):  # caught up, but the loop itself is late: slowed by that alone
        pace.observe(0.15)
    assert pace.slowed


async def test_probing_measures_the_loops_lateness() -> None:
    now, readings = [0.0], asyncio.Event()

    def clock() -> float:
        now[0] += 0.3  # every reading 0.3 s after the last, as if the loop were stuck
        if now[0] > 3:
            readings.set()
        return now[0]

    pace = Pace(0.1, 0.5, probe_s=0.001, clock=clock)
    task = asyncio.create_task(pace.run())
    await asyncio.wait_for(readings.wait(), 5)
    task.cancel()
    assert pace.slowed and pace.lag_s > 0.04


async def test_a_gateway_reading_late_asks_the_services_to_pace_then_says_it_is_back() -> None:
    """Only reading late asks (a late loop alone has no backlog in NATS to drain, and ticks
    the services took long over pile up nowhere); once it reads in time for the hold, the
    gateway tries every tick again and says so once, and nothing more."""
    bus = InMemoryBus()
    now = [0.0]
    pace = Pace(0.1, 0.5)
    task = asyncio.create_task(
        announce_forever(pace, bus, "gw-1", every_s=0.001, hold_s=5.0, clock=lambda: now[0])
    )

    def asked() -> list[dict[str, Any]]:
        return [p for s, p in bus.published if s == wire.GATEWAY_PACE]

    async def turns(count: int) -> None:  # the announcer's next few turns
        for _ in range(count):
            await asyncio.sleep(0.002)

    for _ in range(5):
        pace.observe(0.15)  # a late loop: frames slow down, but nothing piles up in NATS
    await turns(5)
    assert pace.slowed and asked() == []
    for _ in range(10):
        pace.observe(0.0)
        pace.observe_age(3.0)  # ticks 3 s old, but read as soon as sent: the services'
        pace.observe_read(0.05)  # time, which piles up nowhere
    await turns(5)
    assert asked() == [] and not pace.slowed
    for _ in range(5):
        pace.observe_read(3.0)  # read 3 s after they were sent: behind
    await wait_until(lambda: asked())
    assert asked()[0] == {"src": "gw-1", "interval": 0.5, "ttl": 0.003}
    for _ in range(10):
        pace.observe_read(0.05)  # caught up (the services' lighter load)
    await turns(5)  # the calm begins
    now[0] = 4.9
    await turns(5)
    assert {p["interval"] for p in asked()} == {0.5}  # still within the hold
    now[0] = 5.1
    await wait_until(lambda: asked()[-1]["interval"] == 0)
    back = len(asked())
    await turns(5)
    assert len(asked()) == back  # said once
    for _ in range(5):
        pace.observe_read(3.0)  # behind again: the next thing it says
    await wait_until(lambda: len(asked()) > back)
    assert [p["interval"] for p in asked()[back - 1 : back + 1]] == [0, 0.5]
    task.cancel()


async def test_the_pace_slows_while_not_enough_and_follows_the_load_back_down() -> None:
    """An ask gets time to work (as long as the reading is late, and a turn); if it then
    still reads late and not a quarter less so, the interval doubles, never past the limit.
    Once it reads in time for the hold, it tries half the interval, step by step; a try
    that makes it late again is undone at once and the next try waits twice as long."""
    a = Announcer()
    late, at, pace = a.late, a.at, a.pace
    late(3.0)
    assert await at(0.0) == 0.5
    assert await at(2.0) == 0.5  # too soon to tell: what it reads now was sent before the ask
    assert await at(3.1) == 1.0  # still 3 s late: not enough
    assert pace.frame_s == 1.0  # its own frames keep that pace too: one per pass
    assert await at(4.0) == 1.0
    assert await at(6.2) == 2.0
    assert await at(9.5) == wire.PACE_MAX_INTERVAL_S == 2.0  # the limit
    late(2.0)
    assert await at(13.0) == 2.0  # a third less late: that pace works, held while draining
    late(0.1)
    assert await at(14.0) == 2.0  # in time: the calm begins
    assert await at(18.9) == 2.0
    assert await at(19.0) == 1.0  # calm for the hold: half the interval
    assert await at(23.9) == 1.0
    late(3.0)
    assert await at(24.0) == 2.0  # that try was too light: undone at once
    late(0.1)
    assert await at(25.0) == 2.0
    assert await at(30.0) == 2.0  # the next try waits twice as long
    assert await at(35.0) == 1.0
    assert await at(40.0) == 0.5  # that try held: the next one as soon
    assert await at(45.0) == 0.0  # back to every tick
    assert pace.frame_s == pace.interval_s == 0.1
    late(3.0)
    assert await at(46.0) == 0.5  # a new ask starts again at the slow frame interval
    a.task.cancel()
    assert [p["interval"] for s, p in a.bus.published if s == wire.GATEWAY_PACE][-1] == 0.5


async def test_a_pace_that_keeps_up_without_room_to_spare_holds() -> None:
    """Reading between the thresholds (0.25–0.5 s late) neither slows further nor tries a
    lighter pace: the calm that lets it try one begins only with time to spare."""
    a = Announcer()
    late, at = a.late, a.at
    late(3.0)
    assert await at(0.0) == 0.5
    late(0.4)
    assert await at(1.0) == 0.5
    assert await at(30.0) == 0.5  # kept up, no room: held however long
    late(0.1)
    assert await at(31.0) == 0.5  # room to spare: the calm begins
    assert await at(36.0) == 0.0
    a.task.cancel()


class Announcer:
    """:func:`announce_forever` on a clock the test sets, a turn every millisecond."""

    def __init__(self) -> None:
        self.bus, self.now, self.pace = InMemoryBus(), 0.0, Pace(0.1, 0.5)
        self.said: list[float] = []
        self.task = asyncio.create_task(
            announce_forever(
                self.pace,
                self.bus,
                "gw-1",
                every_s=0.001,
                hold_s=5.0,
                clock=lambda: self.now,
                on_ask=self.said.append,
            )
        )

    def late(self, delay_s: float) -> None:
        """The gateway reads ``delay_s`` after the services sent (smoothed to it)."""
        for _ in range(30):
            self.pace.observe_read(delay_s)

    async def at(self, t: float) -> float:
        """The interval asked once the clock reads ``t``."""
        self.now = t
        for _ in range(5):
            await asyncio.sleep(0.002)
        return self.said[-1]
