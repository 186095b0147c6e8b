"""Real servers for the whole test run: one PostgreSQL and one nats-server, started once.

Each test that asks for a database gets a fresh one, cloned from a migrated template.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from shared import devservers
from shared.bus import NatsBus

_counter = itertools.count()


@pytest.fixture(scope="session")
def pg_server_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = devservers.start_postgres(tmp_path_factory.mktemp("pg") / "data", delete_on_exit=True)
    yield server.get_uri()
    server._cleanup()


@pytest.fixture(scope="session")
def db_templates(pg_server_uri: str) -> dict[str, str]:
    """Two template databases: migrated and empty, migrated with the demo data."""
    from shared.db.demo import load_demo_data
    from shared.db.engine import create_engine, session_factory
    from shared.db.migrate import upgrade

    async def make(name: str, demo: bool) -> None:
        url = await devservers.create_database(pg_server_uri, name)
        await _to_thread(upgrade, url)
        if demo:
            engine = create_engine(url, null_pool=True)
            await load_demo_data(session_factory(engine), password=TEST_PASSWORD)
            await engine.dispose()

    devservers.run_async(make("tpl_empty", demo=False))
    devservers.run_async(make("tpl_demo", demo=True))
    return {"empty": "tpl_empty", "demo": "tpl_demo"}


async def _to_thread(fn: Any, *args: Any) -> Any:
    import asyncio

    return await asyncio.to_thread(fn, *args)


TEST_PASSWORD = "test-password-1"


def _fresh_database(pg_server_uri: str, template: str) -> Iterator[str]:
    name = f"t{os.getpid()}_{next(_counter)}"
    url = devservers.run_async(devservers.create_database(pg_server_uri, name, template))
    yield url
    devservers.run_async(devservers.drop_database(pg_server_uri, name))


@pytest.fixture
def database_url(pg_server_uri: str, db_templates: dict[str, str]) -> Iterator[str]:
    """A fresh, migrated, empty database for this test."""
    yield from _fresh_database(pg_server_uri, db_templates["empty"])


@pytest.fixture
def demo_database_url(pg_server_uri: str, db_templates: dict[str, str]) -> Iterator[str]:
    """A fresh database holding the demo data (password ``TEST_PASSWORD``)."""
    yield from _fresh_database(pg_server_uri, db_templates["demo"])


@pytest.fixture(scope="session")
def nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = devservers.NatsServer(tmp_path_factory.mktemp("nats")).start()
    yield server.url
    server.stop()


@pytest.fixture
async def bus(nats_url: str) -> AsyncIterator[NatsBus]:
    b = await NatsBus.connect(nats_url, name="test")
    yield b
    await b.close()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parent.parent
