"""What a service makes of the gateways' ``gateway.pace`` asks."""

from __future__ import annotations

from shared.components.pacing import MAX_INTERVAL_S, GatewayPace
from tests.example_service.fakes import FakeClock


async def test_the_slowest_gateway_sets_the_pace_until_its_ask_lapses() -> None:
    clock = FakeClock()
    pace = GatewayPace(clock.monotonic)
    assert pace.interval() == 0
    await pace.on_pace("gateway.pace", {"src": "a", "interval": 0.5, "ttl": 3})
    await pace.on_pace("gateway.pace", {"src": "b", "interval": 1.0, "ttl": 1})
    assert pace.interval() == 1.0
    clock.advance(1)  # b's ask lapsed (b is gone, or never said it recovered)
    assert pace.interval() == 0.5
    await pace.on_pace("gateway.pace", {"src": "a", "interval": 0, "ttl": 3})  # a recovered
    assert pace.interval() == 0


async def test_an_ask_out_of_bounds_is_bounded_and_nonsense_is_no_ask() -> None:
    clock = FakeClock()
    pace = GatewayPace(clock.monotonic)
    await pace.on_pace("gateway.pace", {"src": "a", "interval": 3600, "ttl": 86400})
    assert pace.interval() == MAX_INTERVAL_S  # never slower than this
    clock.advance(10)
    assert pace.interval() == 0  # nor for longer than MAX_TTL_S
    for junk in ({"src": "b", "interval": "9", "ttl": 3}, {"src": "c", "interval": True},
                 {"src": "d", "interval": -1, "ttl": 3}, {"src": "e", "interval": 1}):  # fmt: skip
        await pace.on_pace("gateway.pace", junk)
    assert pace.interval() == 0  # no ttl: lapsed at once
