"""What the gateway's service tests share: a served gateway, a logged-in browser with its
socket, and the session announcements it publishes."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
from websockets.asyncio.client import connect

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.testing import Served, csrf_of_page, login
from gateway.wsprotocol import GatewayWebSocketProtocol
from shared import wire
from shared.bus import NatsBus
from shared.devservers import free_port
from tests.conftest import TEST_PASSWORD
from tests.support import collect


def unserved_settings() -> GatewaySettings:
    """Gateway settings whose component services do not answer."""
    dead = f"http://127.0.0.1:{free_port()}"
    return GatewaySettings(portfolio_url=dead, watchlist_url=dead, orders_url=dead, risk_url=dead)


class Browser:
    """One logged-in browser: an HTTP client with its cookie and the page's CSRF token."""

    def __init__(self, gateway: Served, client: httpx.AsyncClient, csrf: str) -> None:
        self.gateway, self.client, self.csrf = gateway, client, csrf

    @property
    def cookie(self) -> str:
        return "; ".join(f"{k}={v}" for k, v in self.client.cookies.items())

    def socket(
        self, *, csrf: str | None = "page", origin: str | None = "own", **options: Any
    ) -> Any:
        query = "" if csrf is None else f"?csrf={self.csrf if csrf == 'page' else csrf}"
        own = self.gateway.url
        return connect(
            f"{self.gateway.ws_url}/ws{query}",
            origin=(own if origin == "own" else origin),  # type: ignore[arg-type]
            additional_headers={"Cookie": self.cookie},
            compression=None,
            max_size=None,
            **options,
        )


@asynccontextmanager
async def gateway(settings: GatewaySettings) -> AsyncIterator[Served]:
    """The gateway on a real uvicorn with its production WebSocket protocol (the launcher's:
    its deflate settings and its direct sends)."""
    async with Served(create_app(settings), ws=GatewayWebSocketProtocol) as served:
        yield served


@asynccontextmanager
async def browser(served: Served, username: str) -> AsyncIterator[Browser]:
    async with httpx.AsyncClient(base_url=served.url) as client:
        assert (await login(client, username, TEST_PASSWORD)).status_code == 303
        yield Browser(served, client, csrf_of_page((await client.get("/")).text))


async def opened(bus: NatsBus) -> list[tuple[str, dict[str, Any]]]:
    return await collect(bus, "session.*")


def of(events: list[tuple[str, dict[str, Any]]], subject: str) -> list[dict[str, Any]]:
    return [payload for subj, payload in events if subj == subject]


async def render_page(bus: NatsBus, announcement: dict[str, Any]) -> None:
    """What the component services answer an announced socket with: a full render of each
    component, addressed to that socket."""
    user_id, session = int(announcement["user_id"]), str(announcement["session_id"])
    for component in wire.COMPONENTS:
        root = f"{wire.ID_PREFIX[component]}-root"
        update = wire.ui_update(
            user_id, [{"id": root, "html": f'<section id="{root}"></section>'}], full=True,
            session=session,
        )  # fmt: skip
        message = {"component": component, "ts": time.time() * 1000, "updates": [update]}
        await bus.publish(wire.ui_subject(user_id, component), message)


FEED_STATE = re.compile(r'<span id="feed-status"[^>]*\bdata-state="(\w+)"')  # the header's


def part(part_id: str, text: str) -> dict[str, str]:
    return {"id": part_id, "html": f'<div id="{part_id}" role="row">{text}</div>'}


async def send_ui(
    bus: NatsBus,
    user_id: int,
    component: str,
    *parts: dict[str, str],
    full: bool = False,
    session: str | None = None,
    topics: list[str] | None = None,
) -> None:
    """Publish one user's update as a component service does (a one-entry batch)."""
    update = wire.ui_update(user_id, list(parts), full=full, session=session, topics=topics)
    message = {"component": component, "ts": time.time() * 1000, "updates": [update]}
    await bus.publish(wire.ui_subject(user_id, component), message)
