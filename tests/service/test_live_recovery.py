"""After a NATS outage, what changed meanwhile reaches the live page and the risk monitor.

The order event that announced the change was published while NATS was down, so it is
gone: a component service reloads every live instance from PostgreSQL once it reconnects
and publishes full renders; the pricefeed reloads every account's positions. The
nats-server here is the test's own, killed and restarted.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.portfolio.app import create_app
from services.portfolio.settings import PortfolioSettings
from services.pricefeed.app import create_app as pricefeed_app
from services.pricefeed.settings import PricefeedSettings
from shared import wire
from shared.bus import NatsBus
from shared.components.service import live_instance
from shared.db.models import Position, Symbol
from shared.devservers import NatsServer
from shared.identity import Identity
from shared.settings import ServiceSettings
from tests.service.processes_support import kill_nats
from tests.support import running, session_payload, wait_until

pytestmark = pytest.mark.service


@pytest.fixture
def settings(
    demo_database_url: str, own_nats: NatsServer, monkeypatch: pytest.MonkeyPatch
) -> ServiceSettings:
    """DATABASE_URL and NATS_URL: a fresh demo database and the test's own nats-server."""
    monkeypatch.setenv("DATABASE_URL", demo_database_url)
    monkeypatch.setenv("NATS_URL", own_nats.url)
    return ServiceSettings()


def full_publishes(app: object) -> float:
    counter = app.state.component_metrics.publishes
    return float(counter.labels("portfolio", "true")._value.get())


async def add_position(
    db: async_sessionmaker[AsyncSession], account_id: int, ticker: str, quantity: int, cost: str
) -> None:
    """What a fill writes, without the order event that would announce it."""
    async with db() as s, s.begin():
        symbol_id = await s.scalar(select(Symbol.id).where(Symbol.ticker == ticker))
        s.add(Position(account_id=account_id, symbol_id=symbol_id, quantity=quantity,
                       avg_cost=Decimal(cost)))  # fmt: skip


async def test_after_a_nats_outage_the_live_portfolio_shows_what_changed_meanwhile(
    own_nats: NatsServer, db: async_sessionmaker[AsyncSession], alice: Identity
) -> None:
    bus = await NatsBus.connect(own_nats.url)
    app = create_app(PortfolioSettings())
    try:
        async with running(app):
            await bus.publish(wire.SESSION_OPENED, session_payload(alice))

            def held() -> set[str]:
                component = live_instance(app, alice.user_id, "portfolio")
                if component is None:
                    return set()
                return {p["symbol"] for p in component.state["positions"]}

            await wait_until(held)
            assert "KO" not in held()
            before = full_publishes(app)

            kill_nats(own_nats)  # NATS gone: the fill's order event will be lost
            await add_position(db, alice.account_id, "KO", 10, "60.00")
            own_nats.start()  # back on the same port

            await wait_until(lambda: "KO" in held(), timeout=15)
            await wait_until(lambda: full_publishes(app) > before, timeout=5)
    finally:
        await bus.close()


async def test_after_a_nats_outage_the_risk_monitor_knows_positions_bought_meanwhile(
    own_nats: NatsServer, db: async_sessionmaker[AsyncSession], bob: Identity
) -> None:
    app = pricefeed_app(PricefeedSettings(tick_interval_ms=100, db_write_interval_s=0.2))
    async with running(app):
        feed = app.state.pricefeed
        await wait_until(lambda: feed.leadership.leading, timeout=10)
        assert "AAPL" not in feed.monitor.accounts[bob.account_id].qty
        kill_nats(own_nats)  # the order event of this fill never reaches the feed
        await add_position(db, bob.account_id, "AAPL", 50, "190.00")
        own_nats.start()
        await wait_until(
            lambda: feed.monitor.accounts[bob.account_id].qty.get("AAPL") == 50, timeout=15
        )
