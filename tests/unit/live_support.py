"""Helpers of the live-session unit tests: sessions over the in-memory bus."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shared.bus import InMemoryBus
from shared.components import ComponentContext, LiveSessions
from shared.components.testing import ui_updates
from tests.example_service.components import registry
from tests.example_service.fakes import FakeClock

__all__ = ["TEMPLATES", "live_sessions", "session", "ui"]

TEMPLATES = Path(__file__).resolve().parents[1] / "example_service" / "templates"


def session(sid: str = "s1", user_id: int = 1, account_id: int = 1) -> dict[str, Any]:
    return {
        "session_id": sid,
        "user_id": user_id,
        "account_id": account_id,
        "username": f"u{user_id}",
        "permissions": ["trade"],
    }


def ui(bus: InMemoryBus, user_id: int = 1, component: str = "portfolio") -> list[dict[str, Any]]:
    return ui_updates(bus.published, user_id, component)


async def live_sessions(clock: FakeClock | None = None) -> tuple[InMemoryBus, LiveSessions]:
    bus = InMemoryBus()
    clock = clock or FakeClock()
    live = LiveSessions(
        registry,
        bus,
        context=lambda identity: ComponentContext(user=identity),
        heartbeat_interval=10,
        clock=clock.monotonic,
    )
    await live.start()
    return bus, live
