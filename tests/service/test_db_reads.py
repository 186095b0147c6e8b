"""``Read``: a SELECT compiled once and run on the driver gives what the ORM gives, sees the
session's own writes, and a dropped connection is replaced (a real PostgreSQL)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from sqlalchemy import bindparam, func, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.db.engine import create_engine, database_unavailable, session_factory
from shared.db.models import Account, Position, RiskAlert, Symbol
from shared.db.queries import held_positions
from shared.db.reads import Read
from tests.support import terminate_backend

pytestmark = pytest.mark.service

HOLDINGS = held_positions(
    Position.quantity,
    Position.avg_cost,
    Symbol.ticker,
    Symbol.sector,
    account_id=bindparam("account_id"),
).order_by(Symbol.ticker)


@pytest.fixture
async def engine(demo_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(demo_database_url, pool_size=1)
    yield engine
    await engine.dispose()


@pytest.fixture
def sessions(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return session_factory(engine)


async def test_rows_are_what_the_orm_reads(sessions: async_sessionmaker[AsyncSession]) -> None:
    read = Read(HOLDINGS)
    async with sessions() as db:
        account_ids = (await db.scalars(select(Account.id).order_by(Account.id))).all()
        assert len(account_ids) >= 2
        for account_id in account_ids:
            expected = [tuple(r) for r in await db.execute(HOLDINGS, {"account_id": account_id})]
            got = await read.rows(db, account_id=account_id)
            assert got == expected
            assert all(isinstance(row[1], Decimal) for row in got)
        assert await read.rows(db, account_id=-1) == []


async def test_literals_and_limits_bind_and_timestamps_keep_their_zone(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    newest = Read(
        select(RiskAlert.text, RiskAlert.created_at)
        .where(RiskAlert.level != "none", RiskAlert.account_id == bindparam("account_id"))
        .order_by(RiskAlert.id.desc())
        .limit(bindparam("limit"))
    )
    async with sessions() as db:
        account_id = await db.scalar(select(Account.id).order_by(Account.id).limit(1))
        for i in range(3):
            db.add(RiskAlert(account_id=account_id, level="warn", text=f"a{i}", utilisation_pct=80))
        await db.flush()  # in this transaction: a Read on the session's connection sees it
        rows = await newest.rows(db, account_id=account_id, limit=2)
        await db.rollback()
    assert [t for t, _ in rows] == ["a2", "a1"]
    assert all(ts.tzinfo is not None and ts <= datetime.now(UTC) for _, ts in rows)


async def test_scalar_first_and_scalars(sessions: async_sessionmaker[AsyncSession]) -> None:
    cash = Read(select(Account.cash).where(Account.id == bindparam("id")))
    tickers = Read(select(Symbol.ticker).order_by(Symbol.ticker))
    async with sessions() as db:
        account_id = await db.scalar(select(Account.id).order_by(Account.id).limit(1))
        await db.execute(
            update(Account).where(Account.id == account_id).values(cash=Decimal("12.34"))
        )
        assert await cash.scalar(db, id=account_id) == Decimal("12.34")
        assert await cash.scalar(db, id=-1) is None
        assert await cash.first(db, id=-1) is None
        assert await tickers.scalars(db) == sorted((await db.scalars(select(Symbol.ticker))).all())
        await db.rollback()


async def test_a_dropped_connection_fails_the_read_then_is_replaced(
    engine: AsyncEngine, sessions: async_sessionmaker[AsyncSession], demo_database_url: str
) -> None:
    pid = Read(select(func.pg_backend_pid()))
    async with sessions() as db:
        first = await pid.scalar(db)
    await terminate_backend(demo_database_url, first)
    with pytest.raises(DBAPIError) as failed:
        async with sessions() as db:
            await pid.scalar(db)
    assert database_unavailable(failed.value)
    async with sessions() as db:
        assert await pid.scalar(db) != first


async def test_pending_orm_changes_are_flushed_first_as_the_orm_would(
    sessions: async_sessionmaker[AsyncSession],
) -> None:
    """A handler changes rows through the ORM, then remounts through a Read: the Read
    sees the change, as an ORM query would through autoflush."""
    cash = Read(select(Account.cash).where(Account.id == bindparam("id")))
    async with sessions() as db:
        account = (await db.scalars(select(Account).order_by(Account.id).limit(1))).one()
        account.cash = Decimal("98765.43")  # pending, not flushed
        assert await cash.scalar(db, id=account.id) == Decimal("98765.43")
        await db.rollback()
