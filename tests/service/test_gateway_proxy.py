"""The event proxy: CSRF before anything is forwarded, identity added, answers passed through."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
import pytest

from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.testing import Served, StandIn, csrf_of_page, login
from shared import wire
from shared.devservers import free_port
from tests.conftest import TEST_PASSWORD

pytestmark = pytest.mark.service


@dataclass
class Env:
    client: httpx.AsyncClient
    orders: StandIn
    csrf: str


@pytest.fixture
async def env(service_env: None) -> AsyncIterator[Env]:
    orders = StandIn("order")
    dead = f"http://127.0.0.1:{free_port()}"
    async with Served(orders.app()) as service:
        settings = GatewaySettings(
            orders_url=service.url, portfolio_url=dead, watchlist_url=dead, risk_url=dead
        )
        async with Served(create_app(settings)) as gateway:
            async with httpx.AsyncClient(base_url=gateway.url) as client:
                await login(client, "bob", TEST_PASSWORD)
                csrf = csrf_of_page((await client.get("/")).text)
                orders.calls.clear()
                yield Env(client, orders, csrf)


FORM = {"symbol": "AAPL", "side": "buy", "quantity": "10", "order_type": "market"}


async def test_missing_or_wrong_csrf_is_refused_and_nothing_is_forwarded(env: Env) -> None:
    r = await env.client.post("/c/order/submit", data=FORM)
    assert r.status_code == 403
    r = await env.client.post("/c/order/submit", data=FORM, headers={wire.HEADER_CSRF: "0" * 64})
    assert r.status_code == 403
    other = "f" + env.csrf[1:] if env.csrf[0] != "f" else "e" + env.csrf[1:]
    r = await env.client.post("/c/order/submit", data=FORM, headers={wire.HEADER_CSRF: other})
    assert r.status_code == 403
    assert env.orders.calls == []


async def test_not_logged_in_is_401_and_nothing_is_forwarded(env: Env) -> None:
    env.client.cookies.clear()
    r = await env.client.post("/c/order/submit", data=FORM, headers={wire.HEADER_CSRF: env.csrf})
    assert r.status_code == 401 and r.headers["hx-redirect"] == "/login"
    assert env.orders.calls == []


async def test_an_event_is_forwarded_with_identity_and_request_id(env: Env) -> None:
    headers = {wire.HEADER_CSRF: env.csrf, wire.HEADER_REQUEST_ID: "trace-123"}
    r = await env.client.post("/c/order/submit", data=FORM, headers=headers)
    assert r.status_code == 200 and "submit 200" in r.text
    [call] = env.orders.calls
    assert call["name"] == "order" and call["event"] == "submit"
    assert call["body"] == b"symbol=AAPL&side=buy&quantity=10&order_type=market"
    assert call["request_id"] == "trace-123"
    identity = call["identity"]
    assert identity.username == "bob" and identity.has_perm("trade")
    assert identity.account_id > 0 and identity.session_id


@pytest.mark.parametrize(
    ("status", "headers"),
    [
        (422, {}),
        (429, {"Retry-After": "7", "RateLimit-Policy": '"burst";q=60;w=60', "RateLimit": "r=0"}),
        (401, {}),
        (403, {}),
    ],
)
async def test_service_answers_pass_through_unchanged(
    env: Env, status: int, headers: dict[str, str]
) -> None:
    env.orders.event_status, env.orders.event_headers = status, headers
    r = await env.client.post("/c/order/submit", data=FORM, headers={wire.HEADER_CSRF: env.csrf})
    assert r.status_code == status
    assert r.text == f'<div id="order-root">submit {status}</div>'
    assert r.headers["content-type"].startswith("text/html")
    for name, value in headers.items():
        assert r.headers[name] == value


@pytest.mark.parametrize(
    "html",
    [
        '<div id="order-root"></div><div id="logout-form">log in again</div>',
        '<div id="order-root"><form hx-post="/c/order/../portfolio/close" hx-trigger="load">'
        "</form></div>",
        '<div id="order-root"><div hx-swap-oob="innerHTML:body">gone</div></div>',
        '<div id="portfolio-root">not the order ticket</div>',
    ],
)
async def test_an_answer_the_page_would_swap_is_checked_like_a_live_part(
    env: Env, html: str
) -> None:
    env.orders.html = html
    env.orders.event_headers = {"HX-Retarget": "#logout-form", "HX-Reswap": "outerHTML"}
    for status in (200, 422):
        env.orders.event_status = status
        r = await env.client.post(
            "/c/order/submit", data=FORM, headers={wire.HEADER_CSRF: env.csrf}
        )
        assert r.status_code == 502
        assert "answer was refused by the gateway" in r.text and "logout" not in r.text
    env.orders.event_status = 429  # the page does not swap it: passed through as it is
    r = await env.client.post("/c/order/submit", data=FORM, headers={wire.HEADER_CSRF: env.csrf})
    assert r.status_code == 429 and r.text == html
    env.orders.html, env.orders.event_status = None, 200  # a good answer: no swap elsewhere
    r = await env.client.post("/c/order/submit", data=FORM, headers={wire.HEADER_CSRF: env.csrf})
    assert r.status_code == 200 and r.text == '<div id="order-root">submit 200</div>'
    assert "hx-retarget" not in r.headers and "hx-reswap" not in r.headers


async def test_unknown_components_and_events_are_404_and_services_down_are_503(env: Env) -> None:
    h = {wire.HEADER_CSRF: env.csrf}
    assert (await env.client.post("/c/nope/submit", data=FORM, headers=h)).status_code == 404
    assert (await env.client.post("/c/order/../x", data=FORM, headers=h)).status_code == 404
    assert (await env.client.post("/c/order/Bad-Event", data=FORM, headers=h)).status_code == 404
    r = await env.client.post("/c/watchlist/add", data=FORM, headers=h)
    assert r.status_code == 503 and r.headers[wire.HEADER_RETRY_AFTER] == "1"
    assert r.text == "Could not reach the watchlist service. Nothing was submitted; retry."
    assert env.orders.calls == []


async def test_oversized_bodies_are_refused(env: Env) -> None:
    body = {"notes": "x" * (70 * 1024)}
    r = await env.client.post("/c/order/submit", data=body, headers={wire.HEADER_CSRF: env.csrf})
    assert r.status_code == 413 and env.orders.calls == []


async def test_an_order_unanswered_in_time_is_504_saying_a_retry_cannot_place_it_twice(
    service_env: None,
) -> None:
    orders = StandIn("order", delay_s=1.0)
    dead = f"http://127.0.0.1:{free_port()}"
    async with Served(orders.app()) as service:
        settings = GatewaySettings(
            orders_url=service.url,
            portfolio_url=dead,
            watchlist_url=dead,
            risk_url=dead,
            event_timeout_ms=200,
        )
        async with Served(create_app(settings)) as gateway:
            async with httpx.AsyncClient(base_url=gateway.url) as client:
                await login(client, "bob", TEST_PASSWORD)
                csrf = csrf_of_page((await client.get("/")).text)
                r = await client.post(
                    "/c/order/submit", data=FORM, headers={wire.HEADER_CSRF: csrf}
                )
    assert r.status_code == 504
    assert "did not answer in time" in r.text and "cannot be placed twice" in r.text
    assert [c["event"] for c in orders.calls if c["kind"] == "event"] == ["submit"]
