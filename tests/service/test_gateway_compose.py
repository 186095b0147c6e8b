"""The composed page: four fragments fetched concurrently, placeholders for failures, timing."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from decimal import Decimal

import httpx
import pytest
from sqlalchemy import select

from gateway.app import create_app
from gateway.compose import account_value
from gateway.settings import GatewaySettings
from gateway.testing import Served, StandIn, login
from shared import domain, wire
from shared.db.engine import create_engine, session_factory
from shared.db.models import Account, Position, Symbol, User
from shared.devservers import free_port
from tests.conftest import TEST_PASSWORD

pytestmark = pytest.mark.service

URL_FIELD = {
    "portfolio": "portfolio_url",
    "watchlist": "watchlist_url",
    "order": "orders_url",
    "risk_metrics": "risk_url",
}


@pytest.fixture
def settings(service_env: None) -> GatewaySettings:
    return GatewaySettings(fragment_timeout_ms=500)


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
    for element_id in ("app-header", "user-name", "account-value", "conn-state", "logout-form"):
        assert f'id="{element_id}"' in html
    assert 'class="dashboard" id="dashboard"' in html
    assert "Alice Archer" in html
    scripts = re.findall(r"<script[^>]*>", html)
    assert len(scripts) == 3 and all(' src="/static/' in s for s in scripts)  # no inline script
    assert "style=" not in html
    assert r.headers["content-security-policy"].startswith("default-src 'self'")
    assert r.headers["cache-control"] == "no-store"
    assert len(assets) == 4  # app.css and the three scripts, each with a content hash
    for asset in assets:
        assert asset.status_code == 200 and "?v=" in str(asset.url)
        assert "immutable" in asset.headers["cache-control"]
        assert asset.headers["x-content-type-options"] == "nosniff"


async def test_one_service_down_and_one_slow(settings: GatewaySettings) -> None:
    stand_ins = {
        "portfolio": StandIn("portfolio", delay_s=0.25),
        "watchlist": None,
        "order": StandIn("order", delay_s=0.25),
        "risk_metrics": StandIn("risk_metrics", delay_s=0.4),
    }
    async with stack(settings, stand_ins) as client:
        await client.get("/")  # warm the gateway's pool
        started = time.perf_counter()
        r = await client.get("/")
        elapsed = time.perf_counter() - started
    assert r.status_code == 200
    assert (
        '<div id="watchlist-root" class="fragment-unavailable" data-component="watchlist" '
        'role="status" hx-get="/fragments/watchlist" hx-trigger="load delay:2s" '
        'hx-swap="outerHTML">Watchlist unavailable, retrying…</div>'
    ) in r.text
    for component in ("portfolio", "order", "risk_metrics"):
        assert StandIn(component).fragment() in r.text
    assert 0.4 <= elapsed < 0.7, elapsed  # the slowest (0.4 s), not the sum (0.9 s)


async def test_a_fragment_slower_than_the_timeout_is_replaced(settings: GatewaySettings) -> None:
    stand_ins = {c: StandIn(c) for c in wire.COMPONENTS}
    stand_ins["risk_metrics"].delay_s = 1.5
    async with stack(settings, dict(stand_ins)) as client:
        started = time.perf_counter()
        r = await client.get("/")
        elapsed = time.perf_counter() - started
    assert r.status_code == 200
    assert "Risk metrics unavailable, retrying…" in r.text
    assert stand_ins["portfolio"].fragment() in r.text
    assert elapsed < 1.0, elapsed  # the 500 ms timeout, not the 1.5 s service


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


async def test_account_value_is_cash_plus_market_value(settings: GatewaySettings) -> None:
    engine = create_engine(settings.database_url, null_pool=True)
    sessions = session_factory(engine)
    try:
        async with sessions() as s:
            account = await s.scalar(
                select(Account).join(User, User.id == Account.user_id).where(User.username == "bob")
            )
            assert account is not None
            rows = await s.execute(
                select(Position.quantity, Symbol.last)
                .join(Symbol, Symbol.id == Position.symbol_id)
                .where(Position.account_id == account.id)
            )
            expected = account.cash + sum((q * last for q, last in rows), Decimal(0))
        assert await account_value(sessions, account.id) == domain.cents(expected)
    finally:
        await engine.dispose()
