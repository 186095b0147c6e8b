"""Live sessions against a real nats-server: open → full render, tick → parts, close or
missed heartbeats → nothing more.

Nothing here waits a fixed time. "Nothing more" is checked up to a later message that
would have come after it: the service's ``ui.shared`` "done with tick N" message (sent
after the per-user parts of that tick, on the same connection), or a later message on
the same subject. Heartbeat expiry runs on a clock the test moves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from fastapi import FastAPI

from shared import wire
from shared.bus import NatsBus
from shared.components import ComponentOptions, create_component_app
from shared.components.live import LiveSessions
from shared.process import Connections
from shared.settings import ServiceSettings
from tests.example_service.components import registry
from tests.support import ManualClock, wait_until

pytestmark = pytest.mark.service

USER, ACCOUNT = 41, 410
WAIT_S = 10.0  # only a failing test waits this long
HEARTBEAT_S = 0.2  # the sweeper's period; the session's age is on the test's clock
EXPIRY = HEARTBEAT_S * 3  # three missed heartbeats, in clock units


class Inbox:
    """User 41's portfolio updates, one per entry (they arrive batched per partition), and
    the portfolio's "done with tick N" messages, in the order the service sent them (one
    subscription to ``ui.>``, so one ordered stream)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    async def handler(self, subject: str, payload: dict[str, Any]) -> None:
        if subject == wire.ui_shared_subject("portfolio"):
            if payload.get("tick") is not None:
                await self.queue.put(("done", payload["tick"]))
        elif subject == wire.ui_subject(USER, "portfolio"):
            for update in payload.get("updates", ()):
                if update.get("user") == USER:
                    await self.queue.put(("update", (subject, {"ts": payload.get("ts"), **update})))

    async def next(self) -> tuple[str, dict[str, Any]]:
        """The next update (skipping "done" messages)."""
        while True:
            kind, value = await asyncio.wait_for(self.queue.get(), WAIT_S)
            if kind == "update":
                return value  # type: ignore[no-any-return]

    async def assert_quiet_through(self, seq: int) -> None:
        """No update for user 41 before the service said it is done with tick ``seq``."""
        while True:
            kind, value = await asyncio.wait_for(self.queue.get(), WAIT_S)
            assert kind == "done", f"unexpected update {value}"
            if value >= seq:
                return


class Sweeps:
    """Counts the live sessions' background sweeps, so a test can wait for the next one."""

    def __init__(self, live: LiveSessions) -> None:
        self.count = 0
        self._changed = asyncio.Condition()
        sweep = live.sweep

        def counted() -> list[str]:
            stale = sweep()
            self.count += 1
            asyncio.get_running_loop().create_task(self._notify())
            return stale

        live.sweep = counted  # type: ignore[method-assign]

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def next(self) -> None:
        """Wait until a sweep started after this call has finished (a sweep is synchronous,
        so none is half-way through while the test moves the clock)."""
        target = self.count + 1
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(lambda: self.count >= target), WAIT_S)


@pytest.fixture
async def live_app(nats_url: str) -> AsyncIterator[FastAPI]:
    settings = ServiceSettings.model_validate(
        {"IDENTITY_SECRET": "unit-test-secret", "NATS_URL": nats_url}
    )
    app = create_component_app(
        "example-live",
        registry,
        settings,
        connections=Connections(database=False),
        options=ComponentOptions(heartbeat_interval_s=HEARTBEAT_S),
    )
    async with app.router.lifespan_context(app):
        await app.state.bus.flush()
        yield app


@pytest.fixture
async def inbox(bus: NatsBus) -> Inbox:
    inbox = Inbox()
    await bus.subscribe(wire.UI_ALL, inbox.handler)
    await bus.flush()
    return inbox


SESSION = {"session_id": "sess-41", "user_id": USER, "account_id": ACCOUNT, "username": "u41"}


async def test_open_tick_close(live_app: FastAPI, bus: NatsBus, inbox: Inbox) -> None:
    live: LiveSessions = live_app.state.live
    assert isinstance(live_app.state.bus, NatsBus)
    await bus.publish(wire.SESSION_OPENED, SESSION)
    subject, full = await inbox.next()
    assert subject == wire.ui_subject(USER, "portfolio")
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

    await bus.publish(wire.orders_events(ACCOUNT), {"symbol": "NVDA", "qty": 2, "ts": "t"})
    _, added = await inbox.next()
    assert added["full"] is True and "portfolio-row-NVDA" in added["parts"][0]["html"]
    # another account's event reaches nobody here: the next update is the later event's
    # for this account (one subscription in the service, so handled in order)
    await bus.publish(wire.orders_events(999), {"symbol": "AMD", "qty": 2})
    await bus.publish(wire.orders_events(ACCOUNT), {"symbol": "AMZN", "qty": 1, "ts": "t2"})
    _, sentinel = await inbox.next()
    html = sentinel["parts"][0]["html"]
    assert "portfolio-row-AMZN" in html and "portfolio-row-AMD" not in html

    await bus.publish(wire.SESSION_CLOSED, {"session_id": "sess-41"})
    await wait_until(lambda: "sess-41" not in live.sessions, timeout=WAIT_S)
    await bus.publish(wire.PRICES_TICKS, {"seq": 9, "prices": {"MSFT": 430.0}})
    await inbox.assert_quiet_through(9)


async def test_missed_heartbeats_stop_updates(
    live_app: FastAPI, bus: NatsBus, inbox: Inbox
) -> None:
    live: LiveSessions = live_app.state.live
    clock = ManualClock()
    live.sessions.clock = clock  # the sessions' age on the test's clock; the sweeper still runs
    sweeps = Sweeps(live)
    await bus.publish(wire.SESSION_OPENED, SESSION)
    await inbox.next()
    opened = live.sessions["sess-41"].last_seen

    clock.now = opened + EXPIRY - 0.1
    await bus.publish(wire.SESSION_HEARTBEAT, SESSION)
    await wait_until(lambda: live.sessions["sess-41"].last_seen == clock.now, timeout=WAIT_S)
    clock.now = opened + EXPIRY + 0.4  # past the limit since opening, not since the heartbeat
    await sweeps.next()
    assert "sess-41" in live.sessions
    await bus.publish(wire.PRICES_TICKS, {"seq": 1, "prices": {"AAPL": 181.0}})
    assert (await inbox.next())[1]["full"] is False

    clock.now += EXPIRY  # three heartbeats missed
    await sweeps.next()
    assert live.sessions == {}
    await bus.publish(wire.PRICES_TICKS, {"seq": 2, "prices": {"AAPL": 182.0}})
    await inbox.assert_quiet_through(2)
