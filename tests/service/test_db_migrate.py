"""`python -m shared.db.migrate`: upgrades take turns under an advisory lock, and
`wait-head` (the Kubernetes init container) waits for the schema to reach head."""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator

import pytest
from sqlalchemy import text

from shared import devservers
from shared.db.engine import create_engine
from shared.db.migrate import (
    MIGRATION_LOCK_KEY,
    SchemaNotAtHeadError,
    downgrade,
    schema_status,
    upgrade,
    wait_for_head,
)
from shared.db.models import Base
from tests.support import table_names

pytestmark = pytest.mark.service

_names = itertools.count()


@pytest.fixture
async def empty_database(pg_server_uri: str) -> AsyncIterator[str]:
    """A database with nothing in it: not migrated at all."""
    name = f"migrate{os.getpid()}_{next(_names)}"
    url = await devservers.create_database(pg_server_uri, name)
    yield url
    await devservers.drop_database(pg_server_uri, name)


def migrate(url: str, *args: str) -> subprocess.Popen[str]:
    """The command the Job and the init container run, as its own process."""
    return subprocess.Popen(
        [sys.executable, "-m", "shared.db.migrate", *args],
        env={**os.environ, "DATABASE_URL": url},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def finished(proc: subprocess.Popen[str]) -> tuple[int, str]:
    """Its exit code and output (at most 60 s: a hung run fails the test)."""
    out, _ = await asyncio.to_thread(proc.communicate, timeout=60)
    return proc.returncode, out


WAITERS = text(
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    " AND objid = :k"
)


async def test_two_concurrent_upgrades_of_a_fresh_database_both_succeed(
    empty_database: str,
) -> None:
    engine = create_engine(empty_database, null_pool=True).execution_options(
        isolation_level="AUTOCOMMIT"
    )
    async with engine.connect() as holder, engine.connect() as observer:
        # Hold the migration lock ourselves, so both runs are certain to overlap: each must
        # be queued on the lock before either may start.
        await holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        runs = [migrate(empty_database, "upgrade"), migrate(empty_database, "upgrade")]
        try:
            deadline = time.monotonic() + 30
            while await observer.scalar(WAITERS, {"k": MIGRATION_LOCK_KEY}) < 2:
                exited = [r.poll() for r in runs if r.poll() is not None]
                assert not exited, f"a run did not wait for the lock: exit {exited}"
                assert time.monotonic() < deadline, "the runs never queued on the advisory lock"
                await asyncio.sleep(0.05)  # polling the condition above
            await holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
            results = [await finished(run) for run in runs]
        finally:
            for run in runs:
                if run.poll() is None:
                    run.kill()
                    run.wait()
    await engine.dispose()
    for code, out in results:
        assert code == 0, out
    status = await schema_status(empty_database)
    assert status.at_head and status.current == status.heads, status.describe()
    assert await table_names(empty_database) == set(Base.metadata.tables)


async def test_wait_head_fails_on_a_database_that_is_not_migrated(empty_database: str) -> None:
    code, out = await finished(migrate(empty_database, "wait-head", "--timeout", "1"))
    assert code == 1, out
    assert "not at head" in out and "not migrated" in out, out


async def test_wait_head_returns_once_the_upgrade_has_run(empty_database: str) -> None:
    waiting = asyncio.create_task(wait_for_head(empty_database, timeout_s=60, interval_s=0.1))
    status = await schema_status(empty_database)
    assert not status.at_head and not waiting.done()
    await asyncio.to_thread(upgrade, empty_database)
    reached = await asyncio.wait_for(waiting, 30)
    assert reached.at_head and reached.current == reached.heads
    code, out = await finished(migrate(empty_database, "wait-head", "--timeout", "30"))
    assert code == 0 and "schema ready" in out, out


async def test_wait_head_accepts_a_newer_schema_and_refuses_an_older_one(
    database_url: str,
) -> None:
    head = await schema_status(database_url)
    assert head.at_head
    # Older: one migration short of this code's head (a pod of a new release, before the Job).
    await asyncio.to_thread(downgrade, database_url, "-1")
    older = await schema_status(database_url)
    assert older.current and not older.at_head
    with pytest.raises(SchemaNotAtHeadError, match="not at head"):
        await wait_for_head(database_url, timeout_s=0.3, interval_s=0.1)
    # Newer: a revision this code does not know (a later release migrated; an old pod restarts).
    engine = create_engine(database_url, null_pool=True)
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = 'zzzz_future'"))
    await engine.dispose()
    newer = await schema_status(database_url)
    assert newer.unknown == {"zzzz_future"} and newer.at_head
