"""Malformed input never gets a 5xx and never writes anything.

The cases an audit found answered with HTTP 500 (NUL bytes, a 64-bit order id, deeply
nested JSON, multipart without a boundary, too many fields), then a property-based sweep
that throws arbitrary form bodies at every event of the watchlist and orders services.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.orders.app import create_app as orders_app
from services.watchlist.app import create_app as watchlist_app
from shared.db.models import Order, WatchlistItem
from shared.identity import Identity
from shared.settings import ServiceSettings
from tests.support import identity_headers, running

pytestmark = pytest.mark.service

NESTED = "[" * 100_000 + "]" * 100_000


@pytest.fixture
def settings(service_env: None) -> ServiceSettings:  # what conftest's ``db`` builds on
    return ServiceSettings()


@pytest.fixture
async def clients(settings: ServiceSettings) -> AsyncIterator[dict[str, httpx.AsyncClient]]:
    async with running(orders_app()) as orders, running(watchlist_app()) as watchlist:
        yield {"order": orders, "watchlist": watchlist}


async def written(db: async_sessionmaker[AsyncSession]) -> tuple[int, int]:
    async with db() as s:
        orders = await s.scalar(select(func.count()).select_from(Order))
        items = await s.scalar(select(func.count()).select_from(WatchlistItem))
    return int(orders or 0), int(items or 0)


def many_fields() -> str:
    return "&".join(f"f{i}=x" for i in range(1500))


def form(**fields: str) -> dict[str, Any]:
    return {"data": fields}


def raw(body: str | bytes, content_type: str) -> dict[str, Any]:
    return {"content": body, "headers": {"content-type": content_type}}


JSON, MULTIPART, URLENCODED = (
    "application/json",
    "multipart/form-data",
    ("application/x-www-form-urlencoded"),
)
MARKET = {"side": "buy", "quantity": "1", "order_type": "market"}
CASES: list[tuple[str, str, dict[str, Any]]] = [
    ("watchlist", "add_symbol", form(ticker="A\x00PL")),
    ("watchlist", "remove_symbol", form(ticker="KO\x00")),
    ("watchlist", "move", form(ticker="\x00", direction="up")),
    ("watchlist", "suggest", form(ticker="A\x00")),
    ("order", "submit", form(symbol="AA\x00PL", **MARKET)),
    ("order", "cancel", form(order_id=str(2**40))),
    ("order", "cancel", form(order_id=str(-(2**63)))),
    ("order", "submit", raw(NESTED, JSON)),
    ("watchlist", "add_symbol", raw(NESTED, JSON)),
    ("order", "submit", raw(b"--x\r\n", MULTIPART)),
    ("watchlist", "add_symbol", raw(b"--x\r\n", MULTIPART)),
    ("order", "submit", raw(many_fields(), URLENCODED)),
    ("watchlist", "add_symbol", raw(many_fields(), URLENCODED)),
    ("order", "submit", raw(b"\xff\xfe", JSON)),
    ("order", "submit", form(symbol="AAPL", **{**MARKET, "quantity": "1e999999"})),
]


@pytest.mark.parametrize(("component", "event", "request_kwargs"), CASES)
async def test_malformed_input_is_a_4xx_and_writes_nothing(
    component: str,
    event: str,
    request_kwargs: dict[str, Any],
    clients: dict[str, httpx.AsyncClient],
    db: async_sessionmaker[AsyncSession],
    alice: Identity,
) -> None:
    before = await written(db)
    headers = {**identity_headers(alice), **request_kwargs.pop("headers", {})}
    r = await clients[component].post(
        f"/components/{component}/events/{event}", headers=headers, **request_kwargs
    )
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert r.text.strip(), "a 4xx says what was wrong"
    assert await written(db) == before


EVENTS = [
    ("watchlist", "add_symbol"),
    ("watchlist", "remove_symbol"),
    ("watchlist", "move"),
    ("watchlist", "suggest"),
    ("order", "submit"),
    ("order", "cancel"),
]
FIELDS = ["ticker", "direction", "symbol", "side", "quantity", "order_type", "limit_price"]
FIELDS += ["client_order_id", "order_id"]
form_bodies = st.dictionaries(
    st.one_of(st.sampled_from(FIELDS), st.text(max_size=12)),
    st.one_of(
        st.text(max_size=40),
        st.integers().map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(str),
    ),
    max_size=8,
)


@examples(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(body=form_bodies, target=st.sampled_from(EVENTS))
async def test_no_form_body_gets_a_5xx(
    body: dict[str, str],
    target: tuple[str, str],
    clients: dict[str, httpx.AsyncClient],
    alice: Identity,
) -> None:
    component, event = target
    r = await clients[component].post(
        f"/components/{component}/events/{event}", data=body, headers=identity_headers(alice)
    )
    assert r.status_code < 500, (target, body, r.status_code, r.text[:300])
