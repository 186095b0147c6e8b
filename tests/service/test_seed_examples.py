"""The seed's five tests (seed/trading-dashboard.txt), against the demo database.

Only imports and ORM calls are changed: ``Order.objects.filter(symbol="AAPL").count()``
is :func:`order_count`, and the test case runs as alice on a fresh demo database.
"""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import func, select

from services.orders.components import OrderComponent
from services.portfolio.components import PortfolioComponent
from shared.components.testing import (
    ComponentTestCase,
    assert_permission_denied,
    dispatch_event,
)
from shared.db.engine import create_engine, session_factory
from shared.db.models import Order, Symbol
from shared.devservers import run_async
from shared.identity import AnonymousUser
from tests.support import identity_of

pytestmark = pytest.mark.service


def order_count(database_url: str, ticker: str) -> int:
    async def count() -> int:
        engine = create_engine(database_url, null_pool=True)
        try:
            async with session_factory(engine)() as s:
                query = (
                    select(func.count())
                    .select_from(Order)
                    .join(Symbol, Order.symbol_id == Symbol.id)
                    .where(Symbol.ticker == ticker)
                )
                return int(await s.scalar(query) or 0)
        finally:
            await engine.dispose()

    return run_async(count())


class TestOrderComponent(ComponentTestCase):
    @pytest.fixture(autouse=True)
    def _as_alice(self, demo_database_url: str) -> None:
        self.database_url = demo_database_url
        self.db = session_factory(create_engine(demo_database_url, null_pool=True))
        self.user = run_async(identity_of(demo_database_url, "alice"))

    def test_valid_market_order_is_submitted(self):
        component = dispatch_event(
            OrderComponent, "submit",
            {"symbol": "AAPL", "side": "buy",
             "quantity": 10, "order_type": "market"},
        )  # fmt: skip
        assert component.state["status"] == "submitted"
        assert order_count(self.database_url, "AAPL") == 1

    def test_quantity_zero_is_rejected(self):
        component = dispatch_event(
            OrderComponent, "submit",
            {"symbol": "AAPL", "side": "buy",
             "quantity": 0, "order_type": "market"},
        )  # fmt: skip
        assert "quantity" in component.state["errors"]

    def test_unauthenticated_cannot_place_order(self):
        assert_permission_denied(
            OrderComponent, "submit", user=AnonymousUser()
        )  # fmt: skip

    def test_optimistic_patch_shows_pending(self):
        component = OrderComponent()
        patch = component.get_optimistic_patch("submit", {})
        assert patch["status"] == "pending"

    def test_price_tick_updates_portfolio_pnl(self):
        component = PortfolioComponent()
        component.state = {
            "positions": [{
                "symbol": "AAPL", "qty": 10,
                "avg_cost": 180.0, "last": 180.0, "pnl": 0,
            }],
            "total_value": 1800,
        }  # fmt: skip
        asyncio.run(component.on_ws_message({
            "event": "price_tick",
            "prices": {"AAPL": 195.0},
        }))  # fmt: skip
        assert component.state["positions"][0]["pnl"] == 150.0
        assert component.state["total_value"] == 1950.0
