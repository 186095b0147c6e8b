"""The component framework against a real PostgreSQL: shared rate-limit budget, no writes
on non-2xx, and the seed's test shapes with a database."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from shared import wire
from shared.bus import InMemoryBus
from shared.components import PostgresRateLimiter, RateLimited, create_component_app
from shared.components.ratelimit import Rate
from shared.components.testing import ComponentTestCase, assert_state, dispatch_event, trader
from shared.db.engine import create_engine, session_factory
from shared.db.models import RateLimitHit
from shared.process import Connections
from shared.settings import ServiceSettings
from tests.example_service.components import Order, registry
from tests.example_service.fakes import FakeClock, token
from tests.unit.test_components_ratelimit import MakeLimiter, RateLimiterContract

pytestmark = pytest.mark.service

VALID = {"symbol": "AAPL", "side": "buy", "quantity": "10", "order_type": "market"}


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url)
    yield engine
    await engine.dispose()


async def count_rows(engine: AsyncEngine, like: str) -> int:
    async with session_factory(engine)() as session:
        query = select(func.count()).where(RateLimitHit.key.like(like))
        return int((await session.execute(query)).scalar_one())


class TestPostgresRateLimiter(RateLimiterContract):
    @pytest.fixture
    def make_limiter(self, engine: AsyncEngine) -> MakeLimiter:
        return lambda clock: PostgresRateLimiter(session_factory(engine), clock)

    async def test_concurrent_hits_from_two_pools_respect_the_limit(
        self, engine: AsyncEngine, database_url: str
    ) -> None:
        other = create_engine(database_url)
        clock = FakeClock()
        limiters = [
            PostgresRateLimiter(session_factory(e), clock) for e in (engine, other, engine, other)
        ]

        async def attempt(i: int) -> bool:
            try:
                await limiters[i % 4].hit("race", Rate(5, 60))
                return True
            except RateLimited:
                return False

        results = await asyncio.gather(*(attempt(i) for i in range(20)))
        await other.dispose()
        assert sum(results) == 5
        assert await count_rows(engine, "race") == 5

    async def test_a_hit_in_a_callers_transaction_is_one_round_trip(
        self, engine: AsyncEngine
    ) -> None:
        statements: list[str] = []

        def seen(_conn: object, _cursor: object, statement: str, *_args: object) -> None:
            statements.append(statement)

        limiter = PostgresRateLimiter(clock=FakeClock())
        event.listen(engine.sync_engine, "before_cursor_execute", seen)
        try:
            async with session_factory(engine)() as session, session.begin():
                await limiter.hit("one-trip", Rate(5, 60), session)
        finally:
            event.remove(engine.sync_engine, "before_cursor_execute", seen)
        assert len(statements) == 1 and "rate_limit_hit(" in statements[0]
        assert await count_rows(engine, "one-trip") == 1


def _settings(database_url: str) -> ServiceSettings:
    return ServiceSettings.model_validate(
        {"IDENTITY_SECRET": "unit-test-secret", "DATABASE_URL": database_url}
    )


@pytest.fixture
async def two_apps(database_url: str) -> AsyncIterator[list[httpx.AsyncClient]]:
    apps: list[FastAPI] = [
        create_component_app(
            f"example{i}",
            registry,
            _settings(database_url),
            connections=Connections(bus=InMemoryBus()),
        )
        for i in range(2)
    ]
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=a), base_url="http://svc") for a in apps
    ]
    async with apps[0].router.lifespan_context(apps[0]):
        async with apps[1].router.lifespan_context(apps[1]):
            yield clients
    for client in clients:
        await client.aclose()


def _auth(user_id: int = 1) -> dict[str, str]:
    return {wire.HEADER_IDENTITY: token(trader(user_id, user_id))}


async def test_two_app_instances_share_one_budget(
    two_apps: list[httpx.AsyncClient], engine: AsyncEngine
) -> None:
    url = "/components/order/events/submit"
    statuses = [
        (await two_apps[i % 2].post(url, data=VALID, headers=_auth())).status_code for i in range(5)
    ]
    assert statuses == [200, 200, 200, 429, 429]
    refused = await two_apps[0].post(url, data=VALID, headers=_auth())
    assert 1 <= int(refused.headers[wire.HEADER_RETRY_AFTER]) <= 60
    assert (await two_apps[1].post(url, data=VALID, headers=_auth(2))).status_code == 200
    assert await count_rows(engine, "1:order:submit") == 3
    assert await count_rows(engine, "audit:%") == 4


async def test_nothing_is_written_on_422_or_500(
    two_apps: list[httpx.AsyncClient], engine: AsyncEngine
) -> None:
    url = "/components/order/events/submit"
    unknown = await two_apps[0].post(url, data={**VALID, "symbol": "ZZZZ"}, headers=_auth())
    assert unknown.status_code == 422 and "Unknown symbol: ZZZZ" in unknown.text
    invalid = await two_apps[0].post(url, data={**VALID, "quantity": "0"}, headers=_auth())
    assert invalid.status_code == 422
    failed = await two_apps[1].post(url, data={**VALID, "quantity": "13"}, headers=_auth())
    assert failed.status_code == 500
    assert await count_rows(engine, "%") == 0  # no audit rows, no rate-limit hits
    assert (await two_apps[1].post(url, data=VALID, headers=_auth())).status_code == 200
    assert await count_rows(engine, "audit:order:AAPL") == 1


async def test_readyz_checks_database_and_nats(two_apps: list[httpx.AsyncClient]) -> None:
    response = await two_apps[0].get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"] == {"database": "ok", "nats": "ok"}


class TestSeedShapesWithDatabase(ComponentTestCase):
    """Sync helpers with a real database (NullPool engine: one asyncio.run per call)."""

    @pytest.fixture(autouse=True)
    def _database(self, database_url: str) -> Iterator[None]:
        self.sync_engine = create_engine(database_url, null_pool=True)
        self.db = session_factory(self.sync_engine)
        yield

    def _audit_rows(self) -> int:
        return asyncio.run(count_rows(self.sync_engine, "audit:%"))

    def test_valid_market_order_is_submitted(self) -> None:
        component = dispatch_event(Order, "submit", VALID)
        assert_state(component, status="submitted")
        assert self._audit_rows() == 1

    def test_quantity_zero_is_rejected(self) -> None:
        component = dispatch_event(Order, "submit", {**VALID, "quantity": 0})
        assert "quantity" in component.state["errors"]
        assert self._audit_rows() == 0

    def test_rate_limit_in_postgres_budget(self) -> None:
        self.env.limiter = PostgresRateLimiter()
        for _ in range(3):
            dispatch_event(Order, "submit", VALID)
        with pytest.raises(RateLimited):
            dispatch_event(Order, "submit", VALID)
        assert asyncio.run(count_rows(self.sync_engine, "1:order:submit")) == 3
