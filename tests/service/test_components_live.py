"""Live sessions against a real nats-server: open → full render, tick → parts, close or
missed heartbeats → nothing more."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI

from shared import wire
from shared.bus import NatsBus
from shared.components import create_component_app
from shared.settings import ServiceSettings
from tests.example_service.components import registry

pytestmark = pytest.mark.service

QUIET_S = 0.5


class Inbox:
    """User 41's portfolio updates, one per entry (they arrive batched per partition)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    async def handler(self, subject: str, payload: dict[str, Any]) -> None:
        for update in payload.get("updates", ()):
            if update.get("user") == 41:
                await self.queue.put((subject, {"ts": payload.get("ts"), **update}))

    async def next(self, wait: float = 5.0) -> tuple[str, dict[str, Any]]:
        return await asyncio.wait_for(self.queue.get(), wait)

    async def assert_quiet(self) -> None:
        with pytest.raises(TimeoutError):
            await self.next(QUIET_S)


@pytest.fixture
async def live_app(nats_url: str) -> AsyncIterator[FastAPI]:
    settings = ServiceSettings.model_validate(
        {"IDENTITY_SECRET": "unit-test-secret", "NATS_URL": nats_url}
    )
    app = create_component_app(
        "example-live", registry, settings, database=False, heartbeat_interval=0.2
    )
    async with app.router.lifespan_context(app):
        await app.state.bus.flush()
        yield app


@pytest.fixture
async def inbox(bus: NatsBus) -> Inbox:
    inbox = Inbox()
    await bus.subscribe(wire.ui_subject(41, "portfolio"), inbox.handler)
    await bus.flush()
    return inbox


SESSION = {"session_id": "sess-41", "user_id": 41, "account_id": 410, "username": "u41"}


async def test_open_tick_close(live_app: FastAPI, bus: NatsBus, inbox: Inbox) -> None:
    assert isinstance(live_app.state.bus, NatsBus)
    await bus.publish(wire.SESSION_OPENED, SESSION)
    subject, full = await inbox.next()
    assert subject == wire.ui_subject(41, "portfolio")
    assert full["full"] is True and full["parts"][0]["id"] == "portfolio-root"

    tick = {"seq": 7, "ts": "2025-01-02T09:30:00.250Z", "prices": {"MSFT": 420.0}}
    await bus.publish(wire.PRICES_TICKS, tick)
    _, parts = await inbox.next()
    assert parts["full"] is False and parts["ts"] == tick["ts"]
    assert [p["id"] for p in parts["parts"]] == ["portfolio-row-MSFT", "portfolio-total"]

    await bus.publish(wire.PRICES_TICKS, tick)  # same prices: nothing to say …
    later = {"seq": 8, "ts": "later", "prices": {"AAPL": 183.0}}
    await bus.publish(wire.PRICES_TICKS, later)
    _, next_parts = await inbox.next()  # … so the next update is the later tick's
    assert next_parts["ts"] == "later"

    await bus.publish(wire.orders_events(410), {"symbol": "NVDA", "qty": 2, "ts": "t"})
    _, added = await inbox.next()
    assert added["full"] is True and "portfolio-row-NVDA" in added["parts"][0]["html"]
    await bus.publish(wire.orders_events(999), {"symbol": "AMD", "qty": 2})
    await inbox.assert_quiet()

    await bus.publish(wire.SESSION_CLOSED, {"session_id": "sess-41"})
    await bus.flush()
    await asyncio.sleep(0.1)
    await bus.publish(wire.PRICES_TICKS, {"seq": 8, "prices": {"MSFT": 430.0}})
    await inbox.assert_quiet()


async def test_missed_heartbeats_stop_updates(
    live_app: FastAPI, bus: NatsBus, inbox: Inbox
) -> None:
    await bus.publish(wire.SESSION_OPENED, SESSION)
    await inbox.next()
    for _ in range(4):  # heartbeats keep it alive past the 0.6 s limit
        await asyncio.sleep(0.2)
        await bus.publish(wire.SESSION_HEARTBEAT, SESSION)
    await bus.publish(wire.PRICES_TICKS, {"prices": {"AAPL": 181.0}})
    assert (await inbox.next())[1]["full"] is False
    await asyncio.sleep(1.0)  # > 3 × 0.2 s without a heartbeat
    assert live_app.state.live.sessions == {}
    await bus.publish(wire.PRICES_TICKS, {"prices": {"AAPL": 182.0}})
    await inbox.assert_quiet()
