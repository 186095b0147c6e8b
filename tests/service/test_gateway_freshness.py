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
from tests.support import wait_until

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
