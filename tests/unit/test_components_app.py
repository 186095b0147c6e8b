"""The service contract over HTTP (no database, in-memory bus), via httpx.ASGITransport."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from shared import wire
from shared.bus import InMemoryBus
from shared.components import ComponentOptions, InMemoryRateLimiter, create_component_app
from shared.components.service import live_instance
from shared.components.testing import trader, ui_updates
from shared.identity import Identity
from shared.process import Connections
from tests.example_service.components import registry
from tests.example_service.fakes import FakeClock, settings, token

VALID = {"symbol": "AAPL", "side": "buy", "quantity": "10", "order_type": "market"}


@pytest.fixture
async def app() -> AsyncIterator[FastAPI]:
    app = create_component_app(
        "example",
        registry,
        settings(),
        connections=Connections(bus=InMemoryBus(), database=False),
        options=ComponentOptions(limiter=InMemoryRateLimiter(FakeClock())),
    )
    async with app.router.lifespan_context(app):
        yield app


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as c:
        yield c


def auth(identity: Identity | None = None, request_id: str = "") -> dict[str, str]:
    headers = {wire.HEADER_IDENTITY: token(identity or trader())}
    if request_id:
        headers[wire.HEADER_REQUEST_ID] = request_id
    return headers


async def test_get_renders_the_mounted_fragment(client: httpx.AsyncClient) -> None:
    response = await client.get("/components/portfolio", headers=auth())
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert 'id="portfolio-root"' in response.text and "3,800.00" in response.text
    assert response.headers[wire.HEADER_REQUEST_ID]


@pytest.mark.parametrize("path", ["/components/portfolio", "/components/order/events/submit"])
async def test_missing_forged_or_expired_identity_is_401(
    client: httpx.AsyncClient, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    method = client.get if path.count("/") == 2 else client.post
    assert (await method(path)).status_code == 401
    forged = {wire.HEADER_IDENTITY: token(trader(), secret="not-the-secret")}
    assert (await method(path, headers=forged)).status_code == 401
    real_time = time.time
    with monkeypatch.context() as m:
        m.setattr(time, "time", lambda: real_time() - 120)
        expired = {wire.HEADER_IDENTITY: token(trader())}
    response = await method(path, headers=expired)
    assert response.status_code == 401 and "expired" in response.text


async def test_unknown_component_or_event_is_404(client: httpx.AsyncClient) -> None:
    assert (await client.get("/components/nope", headers=auth())).status_code == 404
    response = await client.post("/components/portfolio/events/nope", headers=auth())
    assert response.status_code == 404
    response = await client.post("/components/portfolio/events/ws_message", headers=auth())
    assert response.status_code == 404


async def test_form_event_200_then_422_with_errors(client: httpx.AsyncClient) -> None:
    response = await client.post("/components/order/events/submit", data=VALID, headers=auth())
    assert response.status_code == 200
    assert "Order for 10 AAPL submitted" in response.text
    assert response.headers[wire.HEADER_RATELIMIT_POLICY] == '"order.submit";q=3;w=60'
    assert response.headers[wire.HEADER_RATELIMIT] == '"order.submit";r=2;t=60'
    bad = {**VALID, "quantity": "0"}
    response = await client.post("/components/order/events/submit", data=bad, headers=auth())
    assert response.status_code == 422
    assert 'data-field="quantity"' in response.text
    assert '<p class="status">new</p>' in response.text


async def test_json_payloads_and_malformed_bodies(client: httpx.AsyncClient) -> None:
    url = "/components/watchlist/events/add_symbol"
    response = await client.post(url, json={"ticker": "msft"}, headers=auth())
    assert response.status_code == 200 and 'id="watchlist-row-MSFT"' in response.text
    response = await client.post(url, json=["x"], headers=auth())  # not a form at all: 400
    assert response.status_code == 400 and "JSON body must be an object" in response.text
    response = await client.post(url, json={"ticker": "zzzz"}, headers=auth())
    assert response.status_code == 422 and "Unknown symbol: ZZZZ" in response.text


async def test_permissions_401_and_403(client: httpx.AsyncClient) -> None:
    url = "/components/order/events/submit"
    response = await client.post(url, data=VALID, headers=auth(trader(can_trade=False)))
    assert response.status_code == 403
    assert (await client.get("/components/order", headers=auth(trader(2, 2)))).status_code == 200


async def test_429_with_retry_after_and_ratelimit_headers(client: httpx.AsyncClient) -> None:
    url = "/components/order/events/submit"
    for _ in range(3):
        assert (await client.post(url, data=VALID, headers=auth())).status_code == 200
    response = await client.post(url, data=VALID, headers=auth())
    assert response.status_code == 429
    assert response.headers[wire.HEADER_RETRY_AFTER] == "60"
    assert response.headers[wire.HEADER_RATELIMIT] == '"order.submit";r=0;t=60'
    assert response.headers[wire.HEADER_RATELIMIT_POLICY] == '"order.submit";q=3;w=60'
    other = await client.post(url, data=VALID, headers=auth(trader(2, 2)))
    assert other.status_code == 200


async def test_handler_exception_is_500_logged_with_request_id(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    response = await client.post(
        "/components/order/events/submit",
        data={**VALID, "quantity": "13"},
        headers=auth(request_id="rid-500"),
    )
    assert response.status_code == 500
    assert "rid-500" in response.text and "unlucky" not in response.text
    assert "request_id=rid-500" in caplog.text and "unlucky quantity" in caplog.text


async def test_ops_routes_and_per_app_metrics(app: FastAPI, client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json()["status"] == "ok"
    ready = await client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["checks"] == {"nats": "ok"}
    await client.get("/components/portfolio", headers=auth())
    metrics = (await client.get("/metrics")).text
    assert 'component_requests_total{component="portfolio",event="",status="200"} 1.0' in metrics
    second = create_component_app(
        "other", registry, settings(), connections=Connections(bus=InMemoryBus(), database=False)
    )
    assert second.state.metrics is not app.state.metrics


async def test_successful_event_updates_the_live_instance(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    bus: InMemoryBus = app.state.bus
    opened: dict[str, Any] = {"session_id": "s", "user_id": 1, "account_id": 1}
    await bus.publish(wire.SESSION_OPENED, opened)
    await app.state.live.settled()
    url = "/components/watchlist/events/add_symbol"
    assert (await client.post(url, data={"ticker": "NVDA"}, headers=auth())).status_code == 200
    instance = live_instance(app, 1, "watchlist")
    assert instance is not None
    assert [i["ticker"] for i in instance.state["items"]] == ["AAPL", "NVDA"]
    await client.post(url, data={"ticker": "ZZZZ"}, headers=auth())  # 422: not adopted
    assert "errors" not in instance.state
    await bus.publish(wire.PRICES_TICKS, {"prices": {"NVDA": 125.0}})
    await app.state.live.settled()
    last = ui_updates(bus.published, 1, "watchlist")[-1]
    assert "125.00" in last["parts"][0]["html"]


async def test_callers_cannot_mint_metric_series(client: httpx.AsyncClient) -> None:
    for i in range(3):
        await client.post(f"/components/order/events/junk{i}", data=VALID)  # no identity: 401
    await client.post("/components/order/events/submit", data=VALID)
    metrics = (await client.get("/metrics")).text
    assert "junk" not in metrics
    assert 'event="unknown"' in metrics and 'event="submit"' in metrics


async def test_no_api_docs_on_a_service(client: httpx.AsyncClient) -> None:
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert (await client.get(path)).status_code == 404
