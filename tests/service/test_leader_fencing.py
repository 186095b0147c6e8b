"""Fencing in PostgreSQL: a deposed leader's writes are refused and change nothing."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pricefeed.domain import Quote
from services.pricefeed.metrics import PricefeedMetrics
from services.pricefeed.monitor import Breach, RiskMonitor
from services.pricefeed.writers import AlertWriter, BatchWriter, Fence
from shared.bus import InMemoryBus
from shared.db.engine import create_engine, session_factory
from shared.db.fencing import StaleEpoch, claim_epoch
from shared.db.models import Account, LeaderEpoch, RiskAlert, Symbol

pytestmark = pytest.mark.service
D = Decimal
ROLE = "pricefeed"


@pytest.fixture
async def db(demo_database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(demo_database_url, null_pool=True)
    yield session_factory(engine)
    await engine.dispose()


def fence(epoch: int, holder: str) -> Fence:
    async def claim(session: AsyncSession) -> None:
        await claim_epoch(session, ROLE, epoch, holder)

    return claim


async def price_of(db: async_sessionmaker[AsyncSession], symbol_id: int) -> Decimal:
    async with db() as s:
        last = await s.scalar(select(Symbol.last).where(Symbol.id == symbol_id))
    assert last is not None
    return last


async def stored_epoch(db: async_sessionmaker[AsyncSession]) -> tuple[int, str]:
    async with db() as s:
        row = (await s.execute(select(LeaderEpoch.epoch, LeaderEpoch.holder))).one()
    return row.epoch, row.holder


def writer(db: async_sessionmaker[AsyncSession], epoch: int, holder: str) -> BatchWriter:
    monitor = RiskMonitor({}, {})
    return BatchWriter(db, monitor, PricefeedMetrics(), fence(epoch, holder))


async def test_an_older_epoch_is_refused_after_a_newer_one_wrote(
    db: async_sessionmaker[AsyncSession],
) -> None:
    async with db() as s:
        symbol_id = await s.scalar(select(func.min(Symbol.id)))
    assert symbol_id is not None

    def quote(price: str) -> dict[int, Quote]:
        return {symbol_id: Quote(D(price), D(price), D(price))}

    old, new = writer(db, 5, "feed-a"), writer(db, 7, "feed-b")
    old.add_prices(quote("101"))
    await old.flush()
    assert await price_of(db, symbol_id) == D("101") and await stored_epoch(db) == (5, "feed-a")

    new.add_prices(quote("102"))
    await new.flush()
    assert await price_of(db, symbol_id) == D("102") and await stored_epoch(db) == (7, "feed-b")

    old.add_prices(quote("99"))  # the deposed leader, late
    await old.flush()
    assert await price_of(db, symbol_id) == D("102"), "a stale write changed the table"
    assert await stored_epoch(db) == (7, "feed-b")
    assert old.pending == 1
    assert old.metrics.registry.get_sample_value("pricefeed_fenced_writes_total", {"kind": "batch"})

    new.add_prices(quote("103"))  # the same leader keeps writing under its epoch
    await new.flush()
    assert await price_of(db, symbol_id) == D("103")


async def test_a_stale_alert_is_neither_stored_nor_published(
    db: async_sessionmaker[AsyncSession],
) -> None:
    async with db() as s:
        account_id = await s.scalar(select(func.min(Account.id)))
        before = await s.scalar(select(func.count()).select_from(RiskAlert))
        await claim_epoch(s, ROLE, 9)
        await s.commit()
    assert account_id is not None
    bus = InMemoryBus()
    stale = AlertWriter(db, bus, PricefeedMetrics(), fence(8, "feed-a"))
    await stale.handle(Breach(account_id, "warn", D("81.00"), "w"), 1.0)
    current = AlertWriter(db, bus, PricefeedMetrics(), fence(9, "feed-b"))
    await current.handle(Breach(account_id, "critical", D("96.00"), "c"), 2.0)
    async with db() as s:
        levels = list(await s.scalars(select(RiskAlert.level).order_by(RiskAlert.id)))
    assert len(levels) == (before or 0) + 1 and levels[-1] == "critical"
    assert [p["level"] for _, p in bus.published] == ["critical"]


async def test_a_new_leaders_claim_waits_for_the_old_leaders_transaction(
    db: async_sessionmaker[AsyncSession],
) -> None:
    """The claim locks the role's row until commit: an old leader's write already under way
    lands before the new leader's first write, never after it."""
    async with db() as s:
        symbol_id = await s.scalar(select(func.min(Symbol.id)))
    assert symbol_id is not None
    set_price = text("UPDATE symbols SET last = :p WHERE id = :id")
    old_tx = db()
    await old_tx.begin()
    await claim_epoch(old_tx, ROLE, 5)
    await old_tx.execute(set_price, {"p": 201, "id": symbol_id})

    async def new_leader_writes() -> None:
        async with db() as s, s.begin():
            await claim_epoch(s, ROLE, 6)
            await s.execute(set_price, {"p": 202, "id": symbol_id})

    new_write = asyncio.create_task(new_leader_writes())

    async def waiting_on_a_lock() -> bool:
        async with db() as s:
            query = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
            return bool(await s.scalar(text(query)))

    while not await waiting_on_a_lock():
        assert not new_write.done()
        await asyncio.sleep(0.01)
    await old_tx.commit()
    await old_tx.close()
    await new_write
    assert await price_of(db, symbol_id) == D("202")
    async with db() as s, s.begin():
        with pytest.raises(StaleEpoch):
            await claim_epoch(s, ROLE, 5)
    assert (await stored_epoch(db))[0] == 6
