"""The composed page: four fragments fetched concurrently, placeholders for failures.

No assertion here reads a clock: a stand-in that must be slow is held until the test (or
the other stand-ins) let it answer, and what the page shows is the outcome checked.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.testing import Served, StandIn, login
from shared import wire
from shared.devservers import free_port
from tests.conftest import TEST_PASSWORD

pytestmark = pytest.mark.service

URL_FIELD = {
    "portfolio": "portfolio_url",
    "watchlist": "watchlist_url",
    "order": "orders_url",
    "risk_metrics": "risk_url",
}


# Generous, so a fragment that answers at once never times out on a loaded machine; a test
# of a held stand-in passes only through the timeout, so the timeout test waits this long.
FRAGMENT_TIMEOUT_MS = 10_000
TIMEOUT_TEST_MS = 2_000
_OUTCOME = re.compile(r'^gateway_fragments_total\{component="(\w+)",outcome="(\w+)"\} (\S+)$', re.M)


@pytest.fixture
def settings(service_env: None) -> GatewaySettings:
    return GatewaySettings(fragment_timeout_ms=FRAGMENT_TIMEOUT_MS)


class Gate:
    """Holds a stand-in's answer until :meth:`release` (a ``threading.Event``: each served
    stand-in runs its own event loop in its own thread)."""

    def __init__(self) -> None:
        self._open = threading.Event()

    def arrive(self) -> None:
        """Block until released (run it in a worker thread)."""
        self._open.wait()

    def release(self) -> None:
        self._open.set()


class Rendezvous(Gate):
    """Opens by itself once ``n`` requests have arrived: proof they were all in flight."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self._n, self._arrived, self._lock = n, 0, threading.Lock()

    def arrive(self) -> None:
        with self._lock:
            self._arrived += 1
            if self._arrived >= self._n:
                self.release()
        super().arrive()


@dataclass
class Held(StandIn):
    """A stand-in whose fragment answers only once its gate opens."""

    gate: Gate = field(default_factory=Gate)
    answered: bool = False

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/components/{name}")
        async def get_fragment(request: Request, name: str) -> Response:
            self.calls.append({"kind": "fragment", "name": name})
            await asyncio.to_thread(self.gate.arrive)
            self.answered = True
            return HTMLResponse(self.fragment())

        return app


async def fragment_outcomes(client: httpx.AsyncClient) -> dict[str, dict[str, int]]:
    """The gateway's fragment fetches so far, by component and outcome (from /metrics)."""
    text = (await client.get("/metrics")).text
    outcomes: dict[str, dict[str, int]] = {}
    for component, outcome, count in _OUTCOME.findall(text):
        if float(count):
            outcomes.setdefault(component, {})[outcome] = int(float(count))
    return outcomes


Stack = Callable[..., AsyncIterator[httpx.AsyncClient]]


@asynccontextmanager
async def stack(
    settings: GatewaySettings, stand_ins: dict[str, StandIn | None]
) -> AsyncIterator[httpx.AsyncClient]:
    """Stand-ins on real servers (``None``: nothing listens), the gateway, a logged-in client."""
    async with AsyncExitStack() as exits:
        urls = {}
        for component, stand_in in stand_ins.items():
            if stand_in is None:
                urls[URL_FIELD[component]] = f"http://127.0.0.1:{free_port()}"
            else:
                served = await exits.enter_async_context(Served(stand_in.app()))
                urls[URL_FIELD[component]] = served.url
                if isinstance(stand_in, Held):  # let it answer before its server stops
                    exits.callback(stand_in.gate.release)
        gateway = await exits.enter_async_context(
            Served(create_app(settings.model_copy(update=urls)))
        )
        client = await exits.enter_async_context(httpx.AsyncClient(base_url=gateway.url))
        assert (await login(client, "alice", TEST_PASSWORD)).status_code == 303
        yield client


async def test_page_composes_all_four_fragments_with_the_markup_contract(
    settings: GatewaySettings,
) -> None:
    stand_ins = {c: StandIn(c) for c in wire.COMPONENTS}
    async with stack(settings, dict(stand_ins)) as client:
        r = await client.get("/")
        assets = [
            await client.get(src) for src in re.findall(r'(?:src|href)="(/static/[^"]+)"', r.text)
        ]
    assert r.status_code == 200
    html = r.text
    for stand_in in stand_ins.values():
        assert stand_in.fragment() in html
        [call] = stand_in.calls
        identity = call["identity"]
        assert identity is not None and identity.username == "alice"
        assert identity.has_perm("trade") and identity.session_id
    order = [html.index(f'id="{wire.element_id(c, "root")}"') for c in wire.COMPONENTS]
    assert order == sorted(order)
    assert re.search(r'<div id="live" hx-ext="ws" ws-connect="/ws\?csrf=[0-9a-f]{64}">', html)
    assert re.search(r'<meta name="csrf-token" content="[0-9a-f]{64}">', html)
    assert '<meta name="htmx-config"' in html and '"allowEval":false' in html
    # the account value and margin are placeholders the portfolio and risk services fill live
    for element_id in (
        "app-header",
        "user-name",
        "portfolio-summary",
        "risk-summary",
        "conn-state",
        "logout-form",
    ):
        assert f'id="{element_id}"' in html
    assert 'class="dashboard" id="dashboard"' in html
    assert "Alice Archer" in html
    scripts = re.findall(r"<script[^>]*>", html)
    assert len(scripts) == 4 and all(' src="/static/' in s for s in scripts)  # no inline script
    assert "style=" not in html
    assert r.headers["content-security-policy"].startswith("default-src 'self'")
    assert r.headers["cache-control"] == "no-store"
    assert len(assets) == 5  # app.css and the four scripts, each with a content hash
    for asset in assets:
        assert asset.status_code == 200 and "?v=" in str(asset.url)
        assert "immutable" in asset.headers["cache-control"]
        assert asset.headers["x-content-type-options"] == "nosniff"


async def test_fragments_are_fetched_concurrently_and_a_dead_service_gets_a_placeholder(
    settings: GatewaySettings,
) -> None:
    # Each of the three answers only once all three have been asked: fetched one after
    # another, the first would wait for the others until the (generous) timeout.
    meeting = Rendezvous(3)
    stand_ins: dict[str, StandIn | None] = {
        "portfolio": Held("portfolio", gate=meeting),
        "watchlist": None,  # nothing listens
        "order": Held("order", gate=meeting),
        "risk_metrics": Held("risk_metrics", gate=meeting),
    }
    async with stack(settings, stand_ins) as client:
        r = await client.get("/")
        outcomes = await fragment_outcomes(client)
    assert r.status_code == 200
    assert (
        '<div id="watchlist-root" class="fragment-unavailable" data-component="watchlist" '
        'role="status" hx-get="/fragments/watchlist" hx-trigger="load delay:2s" '
        'hx-swap="outerHTML">Watchlist unavailable, retrying…</div>'
    ) in r.text
    for component in ("portfolio", "order", "risk_metrics"):
        assert StandIn(component).fragment() in r.text
        assert outcomes[component] == {"ok": 1}
    assert outcomes["watchlist"] == {"error": 1}


async def test_a_fragment_slower_than_the_timeout_is_replaced(settings: GatewaySettings) -> None:
    settings = settings.model_copy(update={"fragment_timeout_ms": TIMEOUT_TEST_MS})
    held = Held("risk_metrics", gate=Gate())
    stand_ins: dict[str, StandIn | None] = {c: StandIn(c) for c in wire.COMPONENTS}
    stand_ins["risk_metrics"] = held
    async with stack(settings, stand_ins) as client:
        r = await client.get("/")
        answered = held.answered  # the page came back while risk still had not answered
        outcomes = await fragment_outcomes(client)
    assert r.status_code == 200
    assert held.calls and not answered
    assert "Risk metrics unavailable, retrying…" in r.text
    assert outcomes["risk_metrics"] == {"timeout": 1}
    for component in ("portfolio", "watchlist", "order"):
        assert StandIn(component).fragment() in r.text
        assert outcomes[component] == {"ok": 1}


async def test_the_retry_route_returns_the_fragment_once_the_service_is_back(
    settings: GatewaySettings,
) -> None:
    port = free_port()
    settings = settings.model_copy(update={"watchlist_url": f"http://127.0.0.1:{port}"})
    stand_ins = {c: StandIn(c) for c in ("portfolio", "order", "risk_metrics")}
    async with stack(settings, dict(stand_ins)) as client:
        r = await client.get("/fragments/watchlist")
        assert r.status_code == 200 and 'hx-get="/fragments/watchlist"' in r.text
        async with Served(StandIn("watchlist").app(), port=port):
            r = await client.get("/fragments/watchlist")
        assert r.status_code == 200 and r.text == StandIn("watchlist").fragment()
        assert (await client.get("/fragments/nope")).status_code == 404
        client.cookies.clear()
        r = await client.get("/fragments/watchlist")
        assert r.status_code == 401 and r.headers["hx-redirect"] == "/login"


async def test_a_fragment_the_gateway_would_not_forward_live_is_not_composed(
    settings: GatewaySettings,
) -> None:
    """A service's fragment passes the check its live parts pass: one element, its root."""
    stand_ins = {c: StandIn(c) for c in wire.COMPONENTS}
    stand_ins["portfolio"].html = (
        '<div id="portfolio-root">positions</div>'
        '<form id="logout-form" hx-post="/c/order/submit" hx-trigger="load"></form>'
    )
    async with stack(settings, dict(stand_ins)) as client:
        r = await client.get("/")
        again = await client.get("/fragments/portfolio")
        outcomes = await fragment_outcomes(client)
    assert r.status_code == 200
    assert "Portfolio unavailable, retrying…" in r.text and "/c/order/submit" not in r.text
    assert r.text.count('id="logout-form"') == 1  # the page's own
    assert again.status_code == 200 and "/c/order/submit" not in again.text
    assert outcomes["portfolio"] == {"refused": 2}
    for component in ("watchlist", "order", "risk_metrics"):
        assert StandIn(component).fragment() in r.text
