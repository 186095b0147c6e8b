"""Fixtures the service tests share.

Each module defines its own ``settings`` fixture (the service's Settings class, built after
``service_env`` has pointed it at the demo database and the run's nats-server; the orders
modules share theirs in ``orders/conftest.py``); ``db``, ``alice`` and ``bob`` build on that
module's ``settings``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import devservers
from shared.db.engine import create_engine, session_factory
from shared.identity import Identity
from shared.settings import ServiceSettings
from tests import support
from tests.support import identity_of


@pytest.fixture(autouse=True)
def parts_reach_the_page() -> Iterator[None]:
    """Every part a test collected from a service is one the gateway lets through (a
    template the gateway's check refuses would vanish from the page, silently but for the
    gateway's drop counter)."""
    support.REFUSED.clear()
    yield
    refused, support.REFUSED[:] = list(support.REFUSED), []
    assert not refused, f"parts the gateway would drop: {refused[:5]}"


@pytest.fixture
def service_env(monkeypatch: pytest.MonkeyPatch, demo_database_url: str, nats_url: str) -> None:
    """DATABASE_URL and NATS_URL: a fresh demo database and the run's nats-server."""
    monkeypatch.setenv("DATABASE_URL", demo_database_url)
    monkeypatch.setenv("NATS_URL", nats_url)


@pytest.fixture
def own_nats(tmp_path: Path) -> Iterator[devservers.NatsServer]:
    """A nats-server of this test's own: one it may kill and start again (on its port and
    store), or whose JetStream buckets take this test's settings."""
    server = devservers.NatsServer(tmp_path / "nats").start()
    yield server
    server.stop()


@pytest.fixture
async def db(settings: ServiceSettings) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(settings.database_url, null_pool=True)
    yield session_factory(engine)
    await engine.dispose()


@pytest.fixture
async def alice(settings: ServiceSettings) -> Identity:
    return await identity_of(settings.database_url, "alice")


@pytest.fixture
async def bob(settings: ServiceSettings) -> Identity:
    return await identity_of(settings.database_url, "bob")
