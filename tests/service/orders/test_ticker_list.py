"""The ticket's list of symbols is read once a minute, not at every mount."""

from __future__ import annotations

from decimal import Decimal

import pytest

from services.orders.queries import TickerList
from shared.db.engine import create_engine, session_factory
from shared.db.models import Symbol
from tests.support import ManualClock

pytestmark = pytest.mark.service


async def test_a_new_symbol_shows_once_the_list_is_a_minute_old(demo_database_url: str) -> None:
    engine = create_engine(demo_database_url)
    db = session_factory(engine)
    clock = ManualClock()
    tickers = TickerList(60.0, clock=clock)
    try:
        async with db() as s:
            before = await tickers.get(s)
        assert "AAPL" in before and before == sorted(before)
        price = Decimal("10")
        async with db() as s, s.begin():
            s.add(Symbol(ticker="ZZNEW", name="New", sector="Tech", last=price, bid=price,
                         ask=price, prev_close=price))  # fmt: skip
        clock.now += 59
        async with db() as s:
            assert await tickers.get(s) == before  # no round trip: the list kept
        clock.now += 1
        async with db() as s:
            assert await tickers.get(s) == sorted([*before, "ZZNEW"])
    finally:
        await engine.dispose()
