"""The operators' series that need PostgreSQL (and NATS): the outbox backlog, the database
pool's waits, and the orders service's submit → answer and submit → fill histograms as
its ``/metrics`` exports them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from decimal import Decimal

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.orders.app import create_app
from services.orders.settings import OrdersSettings
from shared import wire
from shared.bus import NatsBus
from shared.db.engine import MeteredPool, create_engine, session_factory
from shared.identity import Identity
from shared.outbox import OutboxRelay, stage
from tests.service.orders.support import last_order, place, place_limit, submit
from tests.support import running, wait_until

pytestmark = pytest.mark.service

Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Series:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get(series: Series, name: str, **labels: str) -> float:
    return series.get((name, tuple(sorted(labels.items()))), 0.0)


async def scrape(client: httpx.AsyncClient) -> Series:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return parse(response.text)


# -- the orders service --------------------------------------------------------------------------


@pytest.fixture
def settings(service_env: None) -> OrdersSettings:
    return OrdersSettings()


async def test_the_orders_service_exports_its_latencies_pool_and_outbox(
    settings: OrdersSettings, db: async_sessionmaker[AsyncSession], alice: Identity
) -> None:
    app = create_app(settings)
    async with running(app) as client:
        before = await scrape(client)
        ok = get(before, "orders_submit_ack_seconds_count", outcome="ok")
        refused = get(before, "orders_submit_ack_seconds_count", outcome="refused")
        fills = get(before, "orders_submit_to_fill_seconds_count")

        await place(client, alice, symbol="AAPL", side="buy", quantity=1)
        r = await submit(client, alice, symbol="NOPE", side="buy", quantity=1)
        assert r.status_code == 422, r.text
        await place_limit(client, alice, "buy", 1, "KO", "50")
        resting = await last_order(db, alice.account_id)
        assert resting.status == "open"
        assert await app.state.venue.match({"KO": (Decimal("49.00"), Decimal("49.50"))}) == [
            resting.id
        ]

        after = await scrape(client)
        assert get(after, "orders_submit_ack_seconds_count", outcome="ok") == ok + 2
        assert get(after, "orders_submit_ack_seconds_count", outcome="refused") == refused + 1
        assert get(after, "orders_submit_to_fill_seconds_count") == fills + 1
        assert get(after, "http_requests_total", code="422") >= 1
        assert get(after, "db_pool_max_connections") == 2 * settings.db_pool_size
        assert get(after, "nats_connected") == 1.0

        async def sent() -> bool:  # three order events: a fill, an open order, its fill
            series = await scrape(client)
            return get(series, "outbox_published_total") >= 3 and (
                get(series, "outbox_backlog") == 0
            )

        await wait_until(sent)
        assert get(await scrape(client), "outbox_oldest_unsent_age_seconds") == 0.0


# -- the outbox relay ----------------------------------------------------------------------------


@pytest.fixture
async def pooled(database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(database_url)
    yield session_factory(engine)
    await engine.dispose()


async def test_the_relay_loop_measures_the_backlog_while_nats_is_away(
    pooled: async_sessionmaker[AsyncSession], nats_url: str
) -> None:
    buses: list[NatsBus] = []
    relay = OutboxRelay(lambda: pooled, lambda: buses[0] if buses else None, interval_s=0.1)
    async with pooled() as session, session.begin():
        for i in range(3):
            stage(session, wire.orders_events(9_000 + i), {"order_id": i})
    relay.start()
    try:
        await wait_until(lambda: relay.backlog == 3)  # no bus yet: nothing sent, all counted
        series = {m.name: m.samples[0].value for m in relay.collect()}
        assert series["outbox_backlog"] == 3
        assert series["outbox_oldest_unsent_age_seconds"] > 0
        assert relay.published == 0

        buses.append(await NatsBus.connect(nats_url, name="outbox-metrics"))
        relay.wake()
        await wait_until(lambda: relay.published == 3 and relay.backlog == 0)
        series = {m.name: m.samples[0].value for m in relay.collect()}
        assert series["outbox_oldest_unsent_age_seconds"] == 0
        assert series["outbox_published"] == 3
    finally:
        await relay.stop()
        for bus in buses:
            await bus.close()


# -- the database pool ---------------------------------------------------------------------------


async def test_a_checkout_that_finds_the_pool_exhausted_is_counted_as_a_wait(
    database_url: str,
) -> None:
    engine = create_engine(database_url, pool_size=1)  # one connection plus one overflow
    pool = engine.pool
    assert isinstance(pool, MeteredPool)
    try:
        async with contextlib.AsyncExitStack() as held:
            await held.enter_async_context(engine.connect())
            second = await held.enter_async_context(engine.connect())
            assert (pool.checkedout(), pool.waits) == (2, 0)

            async def third() -> None:
                async with engine.connect():
                    pass

            waiting = asyncio.create_task(third())
            await wait_until(lambda: pool.waits == 1)
            assert not waiting.done()
            await second.close()  # back to the pool: the waiting checkout gets it
            await waiting
        series = {m.name: m.samples[0].value for m in pool.collect()}
        assert series["db_pool_waits"] == 1 and series["db_pool_wait_seconds"] > 0
        assert series["db_pool_in_use"] == 0 and series["db_pool_max_connections"] == 2
        assert series["db_pool_timeouts"] == 0
    finally:
        await engine.dispose()
