"""The pool pings a connection only after it sat idle (``MeteredPool.ping_after_idle_s``),
against a real PostgreSQL: a busy pool skips three round trips a checkout, and a
connection the server dropped is still found and replaced."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from shared.db.engine import MeteredPool, create_engine, database_unavailable
from tests.support import terminate_backend

pytestmark = pytest.mark.service


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=1)
    yield engine
    await engine.dispose()


def _count_pings(engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    pings: list[int] = []
    ping = engine.dialect.do_ping

    def counted(dbapi_connection: Any) -> bool:
        pings.append(1)
        return ping(dbapi_connection)

    monkeypatch.setattr(engine.dialect, "do_ping", counted)
    return pings


async def _backend_pid(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one())


async def test_a_connection_back_within_the_window_is_not_pinged(
    engine: AsyncEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    pool = engine.pool
    assert isinstance(pool, MeteredPool)
    clock = pool.clock = Clock()
    pings = _count_pings(engine, monkeypatch)
    first = await _backend_pid(engine)  # a new connection: fresh, no ping
    clock.now += pool.ping_after_idle_s / 2
    assert await _backend_pid(engine) == first
    assert pings == []
    clock.now += pool.ping_after_idle_s
    assert await _backend_pid(engine) == first
    assert pings == [1]


async def test_a_connection_dropped_while_idle_is_found_by_the_ping_and_replaced(
    engine: AsyncEngine, database_url: str
) -> None:
    pool = engine.pool
    assert isinstance(pool, MeteredPool)
    clock = pool.clock = Clock()
    first = await _backend_pid(engine)
    await terminate_backend(database_url, first)
    clock.now += pool.ping_after_idle_s
    second = await _backend_pid(engine)  # no error: the ping failed, a new connection
    assert second != first


async def test_a_connection_dropped_within_the_window_fails_once_then_is_replaced(
    engine: AsyncEngine, database_url: str
) -> None:
    pool = engine.pool
    assert isinstance(pool, MeteredPool)
    pool.clock = Clock()  # time stands still: inside the window
    first = await _backend_pid(engine)
    await terminate_backend(database_url, first)
    with pytest.raises(DBAPIError) as failed:
        await _backend_pid(engine)
    assert database_unavailable(failed.value)  # answered 503, a mount retried later
    second = await _backend_pid(engine)
    assert second != first
