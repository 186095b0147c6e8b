"""The gateway's pace: every tick while the loop keeps time, slower while it runs late."""

from __future__ import annotations

import asyncio

from gateway.pace import Pace


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
