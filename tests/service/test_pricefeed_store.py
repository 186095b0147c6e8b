"""The pricefeed's SQL against a real PostgreSQL: snapshot, one-statement batches, alerts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import Decimal

import pytest
from sqlalchemy import event, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.pricefeed.domain import Quote
from services.pricefeed.monitor import Breach
from services.pricefeed.store import (
    insert_alert,
    load_account,
    load_snapshot,
    write_margins,
    write_prices,
)
from shared.db.engine import create_engine, session_factory
from shared.db.models import Account, RiskAlert, Symbol

pytestmark = pytest.mark.service
D = Decimal


@pytest.fixture
async def sessions(demo_database_url: str) -> AsyncIterator[async_sessionmaker[AsyncSession]]:
    engine = create_engine(demo_database_url, null_pool=True)
    statements: list[str] = []

    @event.listens_for(engine.sync_engine, "before_cursor_execute")
    def count(conn, cursor, statement, params, context, executemany):
        statements.append(statement)

    factory = session_factory(engine)
    factory.statements = statements  # type: ignore[attr-defined]
    yield factory
    await engine.dispose()


async def test_snapshot_has_symbols_accounts_positions_and_levels(sessions) -> None:
    async with sessions() as s:
        snap = await load_snapshot(s)
    assert len(snap.symbols) >= 60
    by_qty = {a.id: a for a in snap.accounts}
    assert len(by_qty) == 3
    assert all(a.positions and a.stored_level is None for a in snap.accounts)
    account = snap.accounts[0]
    async with sessions.begin() as s:
        for level in ("warn", "critical", "warn"):
            await s.execute(
                insert(RiskAlert).values(
                    account_id=account.id, level=level, text="t", utilisation_pct=D(1)
                )
            )
    async with sessions() as s:
        snap = await load_snapshot(s)
        row = await load_account(s, account.id)
        assert await load_account(s, 999_999) is None
    # Same created_at within one transaction: the newest id wins.
    assert {a.id: a.stored_level for a in snap.accounts}[account.id] == "warn"
    assert row is not None and row.positions == account.positions


async def test_prices_and_margins_are_written_in_one_statement_each(sessions) -> None:
    async with sessions() as s:
        snap = await load_snapshot(s)
    quotes = {
        sym.id: Quote(sym.quote.last + 1, sym.quote.bid + 1, sym.quote.ask + 1)
        for sym in snap.symbols
    }
    margins = {a.id: D("1234.565") for a in snap.accounts}
    sessions.statements.clear()
    async with sessions.begin() as s:
        assert await write_prices(s, quotes) == 1
        assert await write_margins(s, margins) == 1
    updates = [st for st in sessions.statements if st.lstrip().upper().startswith("UPDATE")]
    assert len(updates) == 2
    # the rows travel as array parameters: the same SQL every cycle, compiled and prepared once
    async with sessions.begin() as s:
        await write_prices(s, dict(list(quotes.items())[:1]))
        assert await write_margins(s, {}) == 0
    again = [st for st in sessions.statements if st.lstrip().upper().startswith("UPDATE")]
    assert again[2] == updates[0] and "unnest" in updates[0] and "unnest" in updates[1]
    async with sessions() as s:
        for sym in await s.scalars(select(Symbol)):
            assert (sym.last, sym.bid, sym.ask) == (
                quotes[sym.id].last,
                quotes[sym.id].bid,
                quotes[sym.id].ask,
            )
        used = set((await s.scalars(select(Account.margin_used))).all())
        assert used == {D("1234.57")}


async def test_alerts_are_stored(sessions) -> None:
    async with sessions() as s:
        account_id = (await load_snapshot(s)).accounts[0].id
    async with sessions.begin() as s:
        ts_ms = 1_700_000_123_456.0  # when its live message says it happened
        await insert_alert(s, Breach(account_id, "critical", D("123456.78"), "way over"), ts_ms)
    async with sessions() as s:
        alert = await s.scalar(select(RiskAlert))
        assert alert is not None
        assert (alert.level, alert.text, alert.utilisation_pct) == (
            "critical",
            "way over",
            D("99999.99"),
        )
        assert alert.created_at.timestamp() * 1000 == ts_ms  # a mount shows the same alert
        assert await s.scalar(select(func.count()).select_from(RiskAlert)) == 1
