"""The tick pass over the in-memory bus: partitions in order while the pass goes on,
shared parts ahead of them, rate-limited components in staggered slices."""

from __future__ import annotations

import asyncio
from typing import Any

from shared import wire
from shared.bus import InMemoryBus
from shared.components import LiveSessions, Registry
from shared.components.rendering import Part
from shared.components.ticking import LIVE_SLICES
from tests.example_service.components import Portfolio
from tests.example_service.fakes import FakeClock
from tests.unit.live_support import TEMPLATES, live_sessions, session


async def test_a_ticks_partitions_are_published_while_the_pass_goes_on() -> None:
    bus, live = await live_sessions()
    users = range(1, 41)  # spread over many partitions
    for user_id in users:
        await bus.publish(wire.SESSION_OPENED, session(f"s{user_id}", user_id, user_id))
    await live.settled()
    before = len(bus.published)
    seen_mid_pass: list[int] = []

    async def meanwhile() -> None:  # another task (a mount, a request) during the pass
        while not any(s.startswith("ui.shared.portfolio") for s, _ in bus.published[before:]):
            ui_messages = [s for s, _ in bus.published[before:] if s.endswith(".portfolio")]
            seen_mid_pass.append(len(ui_messages))
            await asyncio.sleep(0)

    watcher = asyncio.create_task(meanwhile())
    await bus.publish(wire.PRICES_TICKS, {"seq": 1, "ts": 1700000000.25, "prices": {"AAPL": 195.0}})
    await live.settled()
    await asyncio.wait_for(watcher, 5)
    partitions = {wire.partition_of(u) for u in users}
    sent = [s for s, _ in bus.published[before:] if s.endswith(".portfolio") and "shared" not in s]
    assert len(sent) == len(partitions)  # one message per partition, as before
    assert any(0 < n < len(partitions) for n in seen_mid_pass)  # some out, some still to come
    await live.stop()


async def test_a_ticks_shared_parts_precede_its_partitions_in_order_then_the_marker() -> None:
    shared_registry = Registry()

    @shared_registry.register("portfolio")
    class SharedPortfolio(Portfolio):
        template_dir = str(TEMPLATES)

        def topics(self) -> list[str]:
            return [p["symbol"] for p in self.state["positions"]]

        @classmethod
        def topic_parts(cls, topics: Any, prices: Any) -> dict[str, list[Part]]:
            return {
                t: [Part(f"portfolio-last-{t}", f'<b id="portfolio-last-{t}">1</b>')]
                for t in topics
            }

    bus = InMemoryBus()
    live = LiveSessions(shared_registry, bus, heartbeat_interval=10, clock=FakeClock().monotonic)
    await live.start()
    for user_id in range(1, 41):
        await bus.publish(wire.SESSION_OPENED, session(f"s{user_id}", user_id, user_id))
    await live.settled()
    before = len(bus.published)
    await bus.publish(wire.PRICES_TICKS, {"seq": 7, "ts": 1700000000.25, "prices": {"AAPL": 195.0}})
    await live.settled()
    sent = [(s, p) for s, p in bus.published[before:] if s.endswith(".portfolio")]
    (first, shared_parts), *partitions, (last, marker) = sent
    # the shared parts first, saying more follows; each partition once, in order; the marker
    assert first == last == wire.ui_shared_subject("portfolio")
    assert shared_parts["tick"] == 7 and shared_parts["done"] is False
    assert list(shared_parts["topics"]) == ["AAPL"]
    numbers = [int(s.split(".")[1]) for s, _ in partitions]
    assert numbers == sorted({wire.partition_of(u) for u in range(1, 41)})
    assert all(p["tick"] == 7 for _, p in partitions)
    assert marker["tick"] == 7 and "done" not in marker and marker["topics"] == {}
    await live.stop()


async def test_a_rate_limited_component_updates_its_partitions_in_staggered_slices() -> None:
    slow_registry = Registry()

    @slow_registry.register("portfolio")
    class SlowPortfolio(Portfolio):
        template_dir = str(TEMPLATES)
        live_interval = 1.0

    clock = FakeClock()
    bus = InMemoryBus()
    live = LiveSessions(slow_registry, bus, heartbeat_interval=10, clock=clock.monotonic)
    await live.start()
    users = range(1, 81)
    for user_id in users:
        await bus.publish(wire.SESSION_OPENED, session(f"s{user_id}", user_id, user_id))
    await live.settled()
    slice_of = {u: wire.partition_of(u) % LIVE_SLICES for u in users}
    updated: list[set[int]] = []
    for seq in range(1, 9):  # two seconds of 250 ms ticks, AAPL moving on each
        before = len(bus.published)
        tick = {"seq": seq, "ts": 1700000000.0 + seq, "prices": {"AAPL": 190.0 + seq}}
        await bus.publish(wire.PRICES_TICKS, tick)
        await live.settled()
        updated.append(
            {
                u["user"]
                for s, p in bus.published[before:]
                if s.endswith(".portfolio") and "shared" not in s
                for u in p["updates"]
            }
        )
        clock.advance(0.25)
    # each tick carries one slice; each user is brought up to date once a second
    for seq, users_updated in enumerate(updated):
        assert users_updated == {u for u in users if slice_of[u] == seq % LIVE_SLICES}
    # each slice's pass first names the partitions it covers: the others are done
    headers = [
        p
        for s, p in bus.published
        if s == wire.ui_shared_subject("portfolio") and p.get("done") is False
    ]
    assert [h["tick"] for h in headers] == list(range(1, 9))
    assert all(
        {p % LIVE_SLICES for p in h["partitions"]} == {(h["tick"] - 1) % LIVE_SLICES}
        for h in headers
    )
    # and up to the newest price, whatever it missed in between
    last = [p for s, p in bus.published if s.endswith(".portfolio") and "shared" not in s][-1]
    assert "198" in last["updates"][0]["parts"][0]["html"]
    await live.stop()


async def test_a_gateway_that_cannot_keep_up_gets_one_pass_per_its_interval() -> None:
    """``gateway.pace``: after a pass the driver waits out the interval a gateway asked
    for, and the ticks that came meanwhile are one pass (the newest prices); without an
    ask (or once it lapses) every tick is a pass."""
    clock = FakeClock()
    bus, live = await live_sessions(clock)
    waits: list[float] = []
    wake = asyncio.Event()

    async def held(seconds: float) -> None:  # the pause between passes, released by the test
        waits.append(seconds)
        await wake.wait()
        wake.clear()

    live.ticks.sleep = held
    await bus.publish(wire.SESSION_OPENED, session("s1", 1, 1))
    await live.settled()

    def markers() -> list[int]:
        return [p["tick"] for s, p in bus.published if s == wire.ui_shared_subject("portfolio")]

    async def tick(seq: int, price: float) -> None:
        await bus.publish(
            wire.PRICES_TICKS, {"seq": seq, "ts": 1.7e12 + seq, "prices": {"AAPL": price}}
        )

    await bus.publish(wire.GATEWAY_PACE, {"src": "g1", "interval": 0.5, "ttl": 3})
    await tick(1, 195.0)
    await live.settled()  # tick 1's pass is done; the driver waits out the interval
    assert markers() == [1] and len(waits) == 1 and 0 < waits[0] <= 0.5
    await tick(2, 196.0)
    await tick(3, 197.0)
    await asyncio.sleep(0.05)  # the driver has both ticks, but waits
    assert markers() == [1]
    wake.set()
    await live.settled()
    assert markers() == [1, 3]  # one pass for both, with the newest price
    wake.set()  # the wait after that pass
    clock.advance(3)  # the ask lapses: every tick is a pass again, and nothing waits
    for seq in (4, 5):
        await tick(seq, 190.0 + seq)
        await live.settled()
    assert markers() == [1, 3, 4, 5] and len(waits) == 2
    await live.stop()
