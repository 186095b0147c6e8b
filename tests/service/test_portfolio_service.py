"""The portfolio service against real PostgreSQL and NATS: HTTP fragment and live parts."""

from __future__ import annotations

import asyncio
import time
from decimal import Decimal

import pytest
from sqlalchemy import select

from services.portfolio.app import create_app
from services.portfolio.settings import PortfolioSettings
from shared import wire
from shared.bus import NatsBus
from shared.db.engine import create_engine, session_factory
from shared.db.models import Account, Position, Symbol
from tests.support import (
    close_positions,
    collect,
    collect_ui,
    identity_headers,
    identity_of,
    running,
    session_payload,
    wait_until,
)

pytestmark = pytest.mark.service


@pytest.fixture
def settings(service_env: None) -> PortfolioSettings:
    return PortfolioSettings()


async def test_fragment_needs_identity_and_shows_only_own_positions(
    settings: PortfolioSettings,
) -> None:
    alice = await identity_of(settings.database_url, "alice")
    bob = await identity_of(settings.database_url, "bob")
    async with running(create_app(settings)) as client:
        assert (await client.get("/components/portfolio")).status_code == 401
        forged = {"X-Identity": identity_headers(alice, "another-secret")["X-Identity"]}
        assert (await client.get("/components/portfolio", headers=forged)).status_code == 401
        r = await client.get("/components/portfolio", headers=identity_headers(alice))
        assert r.status_code == 200
        assert 'id="portfolio-row-AAPL"' in r.text and 'id="portfolio-row-NVDA"' in r.text
        assert "portfolio-row-TSLA" not in r.text  # bob's
        r = await client.get("/components/portfolio", headers=identity_headers(bob))
        assert "portfolio-row-TSLA" in r.text and "portfolio-row-AAPL" not in r.text


async def test_live_session_full_render_then_changed_rows_only(
    settings: PortfolioSettings, bus: NatsBus
) -> None:
    alice = await identity_of(settings.database_url, "alice", "alice-tab-1")
    ui = await collect_ui(bus, alice.user_id, "portfolio")
    shared = await collect(bus, wire.ui_shared_subject("portfolio"))
    app = create_app(settings)
    async with running(app):
        await bus.publish(wire.SESSION_OPENED, session_payload(alice))
        await wait_until(lambda: len(ui) >= 1)
        first = ui[0][1]
        assert first["full"] is True and first["component"] == "portfolio"
        # the panel, and the header's account value beside it
        assert [p["id"] for p in first["parts"]] == ["portfolio-root", "portfolio-summary"]
        assert 'id="portfolio-row-AAPL"' in first["parts"][0]["html"]

        tick = {
            "seq": 1,
            "ts": 1700000000000.0,
            "prices": {
                "AAPL": {"last": "300.00", "bid": "299.99", "ask": "300.01", "chg_pct": "30.5"}
            },
        }
        await bus.publish(wire.PRICES_TICKS, tick)
        await wait_until(lambda: len(ui) >= 2)
        second = ui[1][1]
        assert second["full"] is False
        # her own cells (P&L, day change, totals); the last price is a shared part
        assert [p["id"] for p in second["parts"]] == [
            "portfolio-pl-AAPL",
            "portfolio-totals",
            "portfolio-summary",
        ]
        assert second["ts"] == tick["ts"]
        await wait_until(lambda: shared)
        [last] = shared[0][1]["topics"]["AAPL"]
        assert last["id"] == "portfolio-last-AAPL" and ">300.00<" in last["html"]

        # TSLA is bob's, not alice's: nothing for alice, so her next update is the next tick's
        for seq, prices in ((2, {"TSLA": "1.00"}), (3, {"AAPL": "301.00"})):
            quotes = {t: {"last": p, "bid": p, "ask": p, "chg_pct": "0"} for t, p in prices.items()}
            await bus.publish(wire.PRICES_TICKS, {"seq": seq, "ts": seq, "prices": quotes})
        await wait_until(lambda: len(ui) >= 3)
        assert ui[2][1]["ts"] == 3

        # an order event for alice's account: a new position appears
        engine = create_engine(settings.database_url, null_pool=True)
        async with session_factory(engine).begin() as s:
            ko = await s.scalar(select(Symbol).where(Symbol.ticker == "KO"))
            assert ko is not None
            s.add(
                Position(
                    account_id=alice.account_id,
                    symbol_id=ko.id,
                    quantity=10,
                    avg_cost=Decimal("60.00"),
                    realised_pnl=Decimal(0),
                )
            )
        await engine.dispose()
        await bus.publish(
            wire.orders_events(alice.account_id),
            {
                "order_id": 1,
                "status": "filled",
                "symbol": "KO",
                "side": "buy",
                "qty": 10,
                "price": "60.00",
                "ts": 2.0,
            },
        )
        await wait_until(lambda: len(ui) >= 4)
        fourth = ui[3][1]
        assert fourth["full"] is True and 'id="portfolio-row-KO"' in fourth["parts"][0]["html"]
        assert "KO" in fourth["topics"]

        # session closed: no more messages. The service's "done with tick 4" comes after
        # anything it would have sent alice for that tick, and the marker after both.
        await bus.publish(wire.SESSION_CLOSED, session_payload(alice))
        await wait_until(lambda: alice.session_id not in app.state.live.sessions)
        await bus.publish(
            wire.PRICES_TICKS,
            {
                "seq": 4,
                "ts": 4.0,
                "prices": {
                    "AAPL": {"last": "310.00", "bid": "309.99", "ask": "310.01", "chg_pct": "1"}
                },
            },
        )
        await wait_until(lambda: any(p.get("tick") == 4 for _, p in shared))
        await ui.settled()
        assert len(ui) == 4
        # every ui.* message says when it was sent: how late a gateway reads it
        done = next(p for _, p in shared if p.get("tick") == 4)
        assert abs(done["sent"] - time.time() * 1000) < 10_000


async def test_fragment_shows_the_latest_tick_not_the_lagging_database(
    settings: PortfolioSettings, bus: NatsBus
) -> None:
    alice = await identity_of(settings.database_url, "alice")
    async with running(create_app(settings)) as client:
        first = await client.get("/components/portfolio", headers=identity_headers(alice))
        assert "123,456.78" not in first.text  # cached from here on for cache_ttl
        tick = {
            "seq": 1,
            "ts": 1.0,
            "prices": {
                "AAPL": {
                    "last": "123456.78",
                    "bid": "123456.77",
                    "ask": "123456.79",
                    "chg_pct": "1",
                }
            },
        }
        await bus.publish(wire.PRICES_TICKS, tick)
        await bus.flush()

        async def shows_tick() -> bool:
            r = await client.get("/components/portfolio", headers=identity_headers(alice))
            return "123,456.78" in r.text

        await wait_until(shows_tick)


async def test_an_account_without_positions_shows_none_and_its_cash(
    settings: PortfolioSettings, bus: NatsBus
) -> None:
    bob = await identity_of(settings.database_url, "bob", "bob-tab-1")
    cash = await close_positions(settings.database_url, bob.account_id, Account.cash)
    assert cash is not None
    ui = await collect_ui(bus, bob.user_id, "portfolio")
    async with running(create_app(settings)):
        await bus.publish(wire.SESSION_OPENED, session_payload(bob))
        await wait_until(lambda: len(ui) >= 1)
    root, summary = ui[0][1]["parts"]
    assert "No open positions." in root["html"] and "portfolio-row-" not in root["html"]
    assert f'<span class="account-cash">{cash:,.2f}</span>' in summary["html"]


async def test_a_gateway_that_cannot_keep_up_slows_the_passes_until_it_recovers(
    settings: PortfolioSettings, bus: NatsBus
) -> None:
    """``gateway.pace``: while a gateway asks, ticks that come within its interval are one
    pass (the newest price, one update, one "done"); once it says it is back (or its ask
    lapses), every tick is a pass again."""
    alice = await identity_of(settings.database_url, "alice", "alice-tab-pace")
    ui = await collect_ui(bus, alice.user_id, "portfolio")
    shared = await collect(bus, wire.ui_shared_subject("portfolio"))
    app = create_app(settings)

    def markers() -> list[int]:
        return [p["tick"] for _s, p in shared if "tick" in p and p.get("done") is not False]

    async def tick(seq: int) -> None:
        price = f"{300 + seq}.00"
        quote = {"last": price, "bid": price, "ask": price, "chg_pct": "0"}
        await bus.publish(wire.PRICES_TICKS, {"seq": seq, "ts": seq, "prices": {"AAPL": quote}})

    async with running(app):
        pace = app.state.live.ticks.pace
        await bus.publish(wire.SESSION_OPENED, session_payload(alice))
        await wait_until(lambda: len(ui) >= 1)
        await bus.publish(wire.GATEWAY_PACE, {"src": "gw-test", "interval": 2.0, "ttl": 10})
        await wait_until(lambda: pace.interval() == 2.0)
        await tick(1)
        await wait_until(lambda: markers() == [1])
        book = app.state.live.prices
        for seq in (2, 3, 4, 5):  # each once the service has the one before: ~0.1 s apart
            await tick(seq)
            await wait_until(lambda seq=seq: book.last("AAPL") == Decimal(300 + seq))  # type: ignore[misc]
            await asyncio.sleep(0.1)  # time for a pass, had the gateway not asked for 2 s
        await wait_until(lambda: 5 in markers())
        assert markers() == [1, 5]
        assert [u["ts"] for _s, u in ui[1:]] == [1, 5]  # alice: one update, the newest price
        assert ">305.00<" in shared[-2][1]["topics"]["AAPL"][0]["html"]

        await bus.publish(wire.GATEWAY_PACE, {"src": "gw-test", "interval": 0, "ttl": 10})
        await wait_until(lambda: pace.interval() == 0)
        for seq in (6, 7):
            await tick(seq)
            await wait_until(lambda seq=seq: seq in markers())  # type: ignore[misc]
        assert markers() == [1, 5, 6, 7]
