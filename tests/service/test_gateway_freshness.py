"""The page is told how fresh its numbers are: waiting, live, delayed (a component went
quiet, or its ticks arrive seconds old)."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest

from gateway.settings import GatewaySettings
from gateway.testing import Served, StandIn
from shared import wire
from shared.bus import NatsBus
from tests.service.gateway_support import (
    browser,
    gateway,
    of,
    opened,
    render_page,
    unserved_settings,
)
from tests.support import collect, wait_until

pytestmark = pytest.mark.service

_FEED_STATE = re.compile(r'<span id="feed-status"[^>]*\bdata-state="(\w+)"')


@pytest.fixture
def settings(service_env: None) -> GatewaySettings:
    return unserved_settings()


async def test_the_page_is_told_how_fresh_its_numbers_are(
    settings: GatewaySettings, bus: NatsBus
) -> None:
    events = await opened(bus)
    async with Served(StandIn("portfolio").app()) as services:  # they answer /healthz
        urls = {
            f"{name}_url": services.url for name in ("portfolio", "watchlist", "orders", "risk")
        }
        settings = settings.model_copy(update={"feed_stale_after_s": 1.5, **urls})
        await _told_how_fresh(settings, bus, events)


async def _told_how_fresh(
    settings: GatewaySettings, bus: NatsBus, events: list[tuple[str, dict[str, Any]]]
) -> None:
    async with gateway(settings) as served, browser(served, "alice") as a, a.socket() as ws:
        await wait_until(lambda: of(events, wire.SESSION_OPENED))
        await render_page(bus, of(events, wire.SESSION_OPENED)[0])

        async def status(state: str) -> str:
            async with asyncio.timeout(10):
                while True:  # frames in order until the header's status says `state`
                    frame = str(await ws.recv())
                    found = _FEED_STATE.search(frame)
                    if found and found[1] == state:
                        return frame

        assert 'id="feed-status"' in await status("waiting")  # its page is in, no tick yet
        done = {"component": "portfolio", "ts": time.time() * 1000, "topics": {}, "tick": 1}
        await bus.publish(wire.ui_shared_subject("portfolio"), done)
        assert "prices live" in await status("live")
        # the portfolio stops finishing ticks: its panel is delayed, said within a second
        assert "delayed (portfolio) — last update" in await status("delayed")
        done = {**done, "ts": time.time() * 1000}
        await bus.publish(wire.ui_shared_subject("portfolio"), done)
        assert "prices live" in await status("live")

        async def finish_ticks(age_ms: float) -> None:  # every 200 ms, each `age_ms` old
            while True:
                tick = {**done, "ts": time.time() * 1000 - age_ms}
                await bus.publish(wire.ui_shared_subject("portfolio"), tick)
                await asyncio.sleep(0.2)

        # ticks finished on time, but each one 10 s old (a backlog upstream): delayed
        backlog = asyncio.create_task(finish_ticks(10_000))
        try:
            assert "delayed (portfolio) — last update" in await status("delayed")
        finally:
            backlog.cancel()
        caught_up = asyncio.create_task(finish_ticks(0))
        try:
            assert "prices live" in await status("live")
        finally:
            caught_up.cancel()


async def test_the_gateway_tells_reading_late_from_ticks_the_services_took_long_over(
    settings: GatewaySettings, bus: NatsBus
) -> None:
    """Only what this gateway reads late asks the services to pace: ticks 3 s old but read
    as soon as they were sent (a long pass) do not; read 3 s after they were sent do."""
    asked = await collect(bus, wire.GATEWAY_PACE)
    async with gateway(settings) as served, browser(served, "alice") as a:

        async def gauge(name: str) -> float:
            text = (await a.client.get("/metrics")).text
            found = re.search(rf"^{name} ([0-9.e+-]+)$", text, re.M)
            assert found, name
            return float(found[1])

        async def finish_ticks(age_ms: float, read_late_ms: float, count: int) -> None:
            for tick in range(count):
                now = time.time() * 1000
                done = {"component": "portfolio", "topics": {}, "tick": tick}
                done |= {"ts": now - age_ms, "sent": now - read_late_ms}
                await bus.publish(wire.ui_shared_subject("portfolio"), done)
                await asyncio.sleep(0.05)

        await finish_ticks(3_000, 0, 20)  # a long pass: old ticks, read at once
        assert await gauge("gateway_tick_age_seconds") > 2.0
        assert await gauge("gateway_read_delay_seconds") < 0.25
        await asyncio.sleep(1.5)  # the announcer's turn: nothing to ask
        assert asked == []
        await finish_ticks(3_000, 3_000, 20)  # the same ticks, read 3 s after they were sent
        assert await gauge("gateway_read_delay_seconds") > 2.0
        await wait_until(lambda: asked, timeout=5)
        assert asked[0][1]["interval"] == 0.5
