"""After a NATS outage, what changed meanwhile reaches the live page and the risk monitor.

The order event that announced the change was published while NATS was down, so it is
gone: a component service reloads every live instance from PostgreSQL once it reconnects
and publishes full renders; the pricefeed reloads every account's positions. The
nats-server here is the test's own, killed and restarted.
"""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select

from services.portfolio.app import create_app
from services.portfolio.settings import PortfolioSettings
from services.pricefeed.app import create_app as pricefeed_app
from services.pricefeed.settings import PricefeedSettings
from shared import devservers, wire
from shared.bus import NatsBus
from shared.components.service import live_instance
from shared.db.engine import create_engine, session_factory
from shared.db.models import Position, Symbol
from tests.support import identity_of, running, session_payload, wait_until

pytestmark = pytest.mark.service


def full_publishes(app: object) -> float:
    counter = app.state.component_metrics.publishes
    return float(counter.labels("portfolio", "true")._value.get())


async def test_after_a_nats_outage_the_live_portfolio_shows_what_changed_meanwhile(
    demo_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = devservers.NatsServer(tmp_path / "nats").start()
    monkeypatch.setenv("DATABASE_URL", demo_database_url)
    monkeypatch.setenv("NATS_URL", server.url)
    alice = await identity_of(demo_database_url, "alice", "alice-tab")
    bus = await NatsBus.connect(server.url)
    engine = create_engine(demo_database_url, null_pool=True)
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

            assert server.process is not None
            server.process.kill()  # NATS gone: the fill's order event will be lost
            server.process.wait()
            async with session_factory(engine)() as s, s.begin():
                ko = await s.scalar(select(Symbol.id).where(Symbol.ticker == "KO"))
                s.add(Position(account_id=alice.account_id, symbol_id=ko, quantity=10,
                               avg_cost=Decimal("60.00")))  # fmt: skip
            server.start()  # back on the same port

            await wait_until(lambda: "KO" in held(), timeout=15)
            await wait_until(lambda: full_publishes(app) > before, timeout=5)
    finally:
        await bus.close()
        await engine.dispose()
        server.stop()


async def test_after_a_nats_outage_the_risk_monitor_knows_positions_bought_meanwhile(
    demo_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = devservers.NatsServer(tmp_path / "nats").start()
    monkeypatch.setenv("DATABASE_URL", demo_database_url)
    monkeypatch.setenv("NATS_URL", server.url)
    bob = await identity_of(demo_database_url, "bob")
    engine = create_engine(demo_database_url, null_pool=True)
    app = pricefeed_app(PricefeedSettings(tick_interval_ms=100, db_write_interval_s=0.2))
    try:
        async with running(app):
            feed = app.state.pricefeed
            await wait_until(lambda: feed.leadership.leading, timeout=10)
            assert "AAPL" not in feed.monitor.accounts[bob.account_id].qty
            assert server.process is not None
            server.process.kill()  # the order event of this fill never reaches the feed
            server.process.wait()
            async with session_factory(engine)() as s, s.begin():
                aapl = await s.scalar(select(Symbol.id).where(Symbol.ticker == "AAPL"))
                s.add(Position(account_id=bob.account_id, symbol_id=aapl, quantity=50,
                               avg_cost=Decimal("190.00")))  # fmt: skip
            server.start()
            await wait_until(
                lambda: feed.monitor.accounts[bob.account_id].qty.get("AAPL") == 50, timeout=15
            )
    finally:
        await engine.dispose()
        server.stop()
