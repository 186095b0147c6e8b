"""Announcing sockets to the services against a real uvicorn and NATS: a window at a time,
and every socket again after a NATS reconnect (gateway/admission.py)."""

from __future__ import annotations

import asyncio

import pytest

from gateway.app import create_app
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


@pytest.fixture
def settings(service_env: None) -> GatewaySettings:
    return unserved_settings()


async def test_a_nats_reconnect_reannounces_every_socket(
    settings: GatewaySettings, bus: NatsBus
) -> None:
    events = await opened(bus)
    app = create_app(settings)
    async with Served(app) as served, browser(served, "alice") as alice, alice.socket():
        await wait_until(lambda: of(events, wire.SESSION_OPENED))
        [first] = of(events, wire.SESSION_OPENED)
        await render_page(bus, first)
        gateway_bus: NatsBus = app.state.bus
        server_loop = gateway_bus.client._reading_task.get_loop()  # uvicorn's, in its thread
        # what nats-py calls once the link is back, on the gateway's own loop
        done = asyncio.run_coroutine_threadsafe(gateway_bus._reconnected(), server_loop)
        await asyncio.wrap_future(done)
        await wait_until(lambda: of(events, wire.SESSION_ANNOUNCE))
        [again] = of(events, wire.SESSION_ANNOUNCE)  # parts sent meanwhile may be lost
        assert [s["session_id"] for s in again["sessions"]] == [first["session_id"]]
        assert sorted(again["components"]) == sorted(wire.COMPONENTS)
        assert len(of(events, wire.SESSION_OPENED)) == 1


async def test_sockets_are_announced_a_window_at_a_time(
    settings: GatewaySettings, bus: NatsBus
) -> None:
    """A connect storm is announced to the services as fast as they answer: one socket
    waits for its turn until another's full renders are in. Until its own are in, its
    page says it waits for prices, and the heartbeat leaves it out (the services would
    mount it out of turn)."""
    events = await opened(bus)
    async with (
        Served(StandIn("portfolio").app()) as services,  # they answer /healthz: none is down
        gateway(
            settings.model_copy(
                update={
                    "ws_announce_window": 1,
                    "ws_announce_timeout_s": 60,
                    "heartbeat_interval_s": 0.2,
                    **{
                        f"{name}_url": services.url
                        for name in ("portfolio", "watchlist", "orders", "risk")
                    },
                }
            )
        ) as served,
        browser(served, "alice") as a,
        a.socket() as tab1,
        a.socket() as tab2,
    ):
        await wait_until(lambda: of(events, wire.SESSION_OPENED))
        await wait_until(lambda: len(of(events, wire.SESSION_HEARTBEAT)) >= 2)
        [first] = of(events, wire.SESSION_OPENED)  # the other waits for its turn
        beat = of(events, wire.SESSION_HEARTBEAT)[-1]
        assert [s["session_id"] for s in beat["sessions"]] == [first["session_id"]]
        waiting = str(await asyncio.wait_for(tab2.recv(), 5))  # a keep-alive: no render yet
        assert 'data-state="waiting"' in waiting and "prices live" not in waiting
        await render_page(bus, first)
        await wait_until(lambda: len(of(events, wire.SESSION_OPENED)) == 2)
        second = of(events, wire.SESSION_OPENED)[1]
        assert second["session_id"] != first["session_id"]
        rendered = ""
        while 'id="risk-root"' not in rendered:  # the last component's, with the status
            rendered = str(await asyncio.wait_for(tab1.recv(), 3))
        assert 'id="feed-status"' in rendered
        await render_page(bus, second)
        await wait_until(lambda: len(of(events, wire.SESSION_HEARTBEAT)[-1]["sessions"]) == 2)
