"""The page is told how fresh its numbers are: waiting, live, delayed (a component went
quiet, or its ticks arrive seconds old)."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from typing import Any

import pytest

from gateway.settings import GatewaySettings
from gateway.testing import Served, StandIn
from gateway.ws import reannounce
from shared import wire
from shared.bus import NatsBus
from shared.identity import Identity
from tests.service.gateway_support import (
    FEED_STATE,
    browser,
    gateway,
    of,
    opened,
    part,
    render_page,
    send_ui,
    unserved_settings,
)
from tests.support import collect, wait_until

pytestmark = pytest.mark.service


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
                    found = FEED_STATE.search(frame)
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


async def test_a_reconnecting_tab_is_told_at_once_its_prices_are_not_live_yet(
    settings: GatewaySettings, bus: NatsBus, alice: Identity
) -> None:
    """A tab keeps its page across a reconnect, "prices live" included. Its user's live
    updates reach it before its full renders (the services still hold the user), so it
    is never quiet long enough for the keep-alive's "waiting": it is told at connect."""
    settings = settings.model_copy(update={"ws_announce_timeout_s": 30.0})
    async with gateway(settings) as served, browser(served, "alice") as b, b.socket() as tab:
        g = served.server.config.app.state.gw
        g.admissions._excused = set  # as if the services answered: its renders are awaited
        states: list[str] = []
        for n in range(25):  # the user's P&L, every 100 ms, for 2.5 s
            await send_ui(bus, alice.user_id, "portfolio", part("portfolio-pnl-KO", str(n)))
            with contextlib.suppress(TimeoutError):
                states += FEED_STATE.findall(str(await asyncio.wait_for(tab.recv(), 0.1)))
        assert states and states[0] == "waiting" and "live" not in states


async def test_a_socket_waiting_its_turn_is_named_so_in_the_heartbeat(
    settings: GatewaySettings, bus: NatsBus
) -> None:
    """A socket asked again (a takeover) is named in the heartbeat with the renders it
    waits its turn for, so the services do not mount it from the heartbeat, out of the
    window."""
    settings = settings.model_copy(
        update={"heartbeat_interval_s": 0.2, "ws_announce_window": 1, "ws_announce_timeout_s": 1.0}
    )
    events = await opened(bus)
    async with gateway(settings) as served, browser(served, "alice") as b:
        async with b.socket(), b.socket() as tab2:
            await wait_until(lambda: len(of(events, wire.SESSION_OPENED)) == 2, 5)
            g = served.server.config.app.state.gw
            await asyncio.sleep(1.2)  # both announced and released: no service here
            g.admissions._excused = set  # as if the services answered: the window holds
            assert reannounce(g, ["portfolio"], range(wire.LIVE_PARTITIONS)) == 2
            beats = len(of(events, wire.SESSION_HEARTBEAT))
            await wait_until(lambda: len(of(events, wire.SESSION_HEARTBEAT)) >= beats + 2, 3)
            entries = [e for m in of(events, wire.SESSION_HEARTBEAT)[beats:] for e in m["sessions"]]
            assert any(e.get("waiting") == ["portfolio"] for e in entries)  # the queued one
            assert tab2.state.name == "OPEN"
