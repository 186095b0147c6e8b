"""Demo data: enough market to look real, the three traders, and idempotent loading."""

from __future__ import annotations

from decimal import Decimal

import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select

from shared import domain
from shared.db.demo import load_demo_data
from shared.db.engine import create_engine, session_factory
from shared.db.models import Account, Position, Symbol, User, WatchlistItem
from shared.db.queries import held_positions

pytestmark = pytest.mark.service

TABLES = (User, Account, Symbol, Position, WatchlistItem)


async def _counts(sessions) -> dict[str, int]:  # type: ignore[no-untyped-def]
    async with sessions() as s:
        return {
            m.__tablename__: await s.scalar(select(func.count()).select_from(m)) for m in TABLES
        }


async def test_demo_data_loads_twice_without_duplicates(database_url: str) -> None:
    engine = create_engine(database_url, null_pool=True)
    sessions = session_factory(engine)
    assert await load_demo_data(sessions, password="pw") is True
    first = await _counts(sessions)
    assert await load_demo_data(sessions, password="pw") is False
    assert await _counts(sessions) == first
    await engine.dispose()


async def test_demo_market_and_traders(demo_database_url: str) -> None:
    engine = create_engine(demo_database_url, null_pool=True)
    async with session_factory(engine)() as s:
        symbols = (await s.scalars(select(Symbol))).all()
        assert len(symbols) >= 60
        assert len({sym.sector for sym in symbols}) >= 8
        users = {u.username: u for u in await s.scalars(select(User))}
        assert {"alice", "bob", "viewer"} <= set(users)
        assert users["alice"].can_trade and users["bob"].can_trade
        assert not users["viewer"].can_trade
        from tests.conftest import TEST_PASSWORD

        assert PasswordHasher().verify(users["alice"].password_hash, TEST_PASSWORD)
        assert users["alice"].password_hash.startswith("$argon2id$")
        for user in users.values():
            account = await s.scalar(select(Account).where(Account.user_id == user.id))
            assert account is not None
            columns = (Symbol.ticker, Symbol.sector, Position.quantity, Symbol.last,
                       Symbol.margin_rate)  # fmt: skip
            positions = (await s.execute(held_positions(*columns, account_id=account.id))).all()
            assert len({p.sector for p in positions}) >= 3, user.username
            watch = await s.scalar(
                select(func.count())
                .select_from(WatchlistItem)
                .where(WatchlistItem.user_id == user.id)
            )
            assert watch >= 4
            if user.username == "alice":
                holdings = [
                    domain.Holding(p.ticker, p.quantity, p.last, margin_rate=p.margin_rate)
                    for p in positions
                ]
                used = domain.margin_used(holdings)
                pct = domain.utilisation_pct(used, account.margin_limit)
                assert Decimal(76) <= pct < Decimal(80)
                assert abs(account.margin_used - used) < 1
    await engine.dispose()
