"""The watchlist service against real PostgreSQL and NATS: add / unknown / duplicate /
remove / reorder / suggestions, and live rows."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import select

from services.watchlist.app import create_app
from services.watchlist.settings import WatchlistSettings
from shared import wire
from shared.bus import NatsBus
from shared.db.engine import create_engine, session_factory
from shared.db.models import Symbol, WatchlistItem
from shared.identity import Identity
from tests.support import (
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
def settings(service_env: None) -> WatchlistSettings:
    return WatchlistSettings()


async def tickers(url: str, user_id: int) -> list[str]:
    engine = create_engine(url, null_pool=True)
    async with session_factory(engine)() as s:
        rows = await s.execute(
            select(Symbol.ticker)
            .join(WatchlistItem, WatchlistItem.symbol_id == Symbol.id)
            .where(WatchlistItem.user_id == user_id)
            .order_by(WatchlistItem.rank)
        )
        result = [t for (t,) in rows]
    await engine.dispose()
    return result


async def post(client: httpx.AsyncClient, who: Identity, event: str, **data: str) -> httpx.Response:
    return await client.post(
        f"/components/watchlist/events/{event}", data=data, headers=identity_headers(who)
    )


async def test_add_unknown_duplicate_remove_and_reorder(settings: WatchlistSettings) -> None:
    url = settings.database_url
    alice = await identity_of(url, "alice")
    before = await tickers(url, alice.user_id)
    assert "KO" not in before
    async with running(create_app(settings)) as client:
        r = await post(client, alice, "add_symbol", ticker=" ko ")
        assert r.status_code == 200
        assert 'id="watchlist-row-KO"' in r.text
        assert await tickers(url, alice.user_id) == [*before, "KO"]

        r = await post(client, alice, "add_symbol", ticker="zzzz")
        assert r.status_code == 422
        assert "Unknown symbol: ZZZZ" in r.text
        assert await tickers(url, alice.user_id) == [*before, "KO"]

        r = await post(client, alice, "add_symbol", ticker="KO")  # already there: said so
        assert r.status_code == 422
        assert "KO is already on your watchlist" in r.text
        assert await tickers(url, alice.user_id) == [*before, "KO"]

        r = await post(client, alice, "move", ticker="KO", direction="up")
        assert r.status_code == 200
        assert await tickers(url, alice.user_id) == [*before[:-1], "KO", before[-1]]
        r = await post(client, alice, "move", ticker=before[0], direction="up")  # already top
        assert await tickers(url, alice.user_id) == [*before[:-1], "KO", before[-1]]
        r = await post(client, alice, "move", ticker="KO", direction="sideways")
        assert r.status_code == 422
        assert "direction" in r.text

        r = await post(client, alice, "remove_symbol", ticker="KO")
        assert r.status_code == 200
        assert "watchlist-row-KO" not in r.text
        assert await tickers(url, alice.user_id) == before


async def test_concurrent_adds_of_one_symbol_leave_one_row(settings: WatchlistSettings) -> None:
    url = settings.database_url
    bob = await identity_of(url, "bob")
    async with running(create_app(settings)) as client:
        results = await asyncio.gather(
            *(post(client, bob, "add_symbol", ticker="MSFT") for _ in range(6))
        )
    # one add wins; the others are told MSFT is already there
    assert sorted(r.status_code for r in results) == [200, 422, 422, 422, 422, 422]
    assert (await tickers(url, bob.user_id)).count("MSFT") == 1


async def test_adds_from_several_tabs_at_once_all_reach_the_live_list(
    settings: WatchlistSettings, bus: NatsBus
) -> None:
    """Each add remounts the list and the live instance adopts its answer's list: without
    one change at a time per user, the last adopted answer lacked the others' symbols."""
    url = settings.database_url
    bob = await identity_of(url, "bob", "bob-tabs")
    before = await tickers(url, bob.user_id)
    engine = create_engine(url, null_pool=True)
    async with session_factory(engine)() as s:
        others = (await s.scalars(select(Symbol.ticker).order_by(Symbol.ticker))).all()
    await engine.dispose()
    wanted = [t for t in others if t not in before][:6]
    ui = await collect_ui(bus, bob.user_id, "watchlist")
    app = create_app(settings)
    async with running(app) as client:
        await bus.publish(wire.SESSION_OPENED, session_payload(bob))
        await wait_until(lambda: ui)
        results = await asyncio.gather(*(post(client, bob, "add_symbol", ticker=t) for t in wanted))
        assert [r.status_code for r in results] == [200] * len(wanted)
        stored = await tickers(url, bob.user_id)
        assert sorted(stored) == sorted([*before, *wanted])
        live = app.state.live.instances[(bob.user_id, "watchlist")].component

        def shown() -> list[str]:
            return [item["ticker"] for item in live.state["items"]]

        await wait_until(lambda: shown() == stored)  # every add, in the stored order
    engine = create_engine(url, null_pool=True)
    async with session_factory(engine)() as s:
        ranks = (
            await s.scalars(select(WatchlistItem.rank).where(WatchlistItem.user_id == bob.user_id))
        ).all()
    await engine.dispose()
    assert len(set(ranks)) == len(ranks)  # no two rows share a rank


async def test_suggestions_by_ticker_or_name_prefix(settings: WatchlistSettings) -> None:
    bob = await identity_of(settings.database_url, "bob")
    async with running(create_app(settings)) as client:
        r = await post(client, bob, "suggest", ticker="micro")
        assert '<option value="MSFT">' in r.text
        r = await post(client, bob, "suggest", ticker="AM")
        assert '<option value="AMZN">' in r.text and '<option value="AMT">' in r.text
        assert '<option value="AMD">' not in r.text  # already on bob's list


async def test_live_rows_follow_ticks(settings: WatchlistSettings, bus: NatsBus) -> None:
    alice = await identity_of(settings.database_url, "alice", "alice-w")
    ui = await collect_ui(bus, alice.user_id, "watchlist")
    shared = await collect(bus, wire.ui_shared_subject("watchlist"))
    async with running(create_app(settings)):
        await bus.publish(wire.SESSION_OPENED, session_payload(alice))
        await wait_until(lambda: ui)
        assert ui[0][1]["full"] is True
        assert "MSFT" in ui[0][1]["topics"] and "KO" not in ui[0][1]["topics"]
        await bus.publish(
            wire.PRICES_TICKS,
            {
                "seq": 1,
                "ts": 5.0,
                "prices": {
                    "MSFT": {"last": "420.00", "bid": "419.95", "ask": "420.05", "chg_pct": "1.15"},
                    "KO": {"last": "70.00", "bid": "69.99", "ask": "70.01", "chg_pct": "7.9"},
                },
            },
        )
        await wait_until(lambda: shared)
        topics = shared[0][1]["topics"]
        assert list(topics) == ["MSFT"]  # KO is on nobody's list: not rendered at all
        [quote] = topics["MSFT"]
        assert quote["id"] == "watchlist-quote-MSFT"
        assert "419.95" in quote["html"] and "420.05" in quote["html"]
        assert len(ui) == 1  # a quote is nobody's own: no per-user update


async def test_events_reach_the_live_rows_and_typing_publishes_nothing(
    settings: WatchlistSettings, bus: NatsBus
) -> None:
    alice = await identity_of(settings.database_url, "alice", "alice-w2")
    ui = await collect_ui(bus, alice.user_id, "watchlist")
    shared = await collect(bus, wire.ui_shared_subject("watchlist"))
    async with running(create_app(settings)) as client:
        await bus.publish(wire.SESSION_OPENED, session_payload(alice))
        await wait_until(lambda: ui)
        await post(client, alice, "suggest", ticker="K")
        await post(client, alice, "add_symbol", ticker="KO")
        await wait_until(lambda: len(ui) >= 2)
        # typing in the add box published nothing: the next update is the add's
        assert "watchlist-row-KO" in ui[1][1]["parts"][0]["html"]
        assert "KO" in ui[1][1]["topics"]
        # the page now shows KO's shared quote
        tick = {"last": "71.00", "bid": "70.99", "ask": "71.01", "chg_pct": "9.4"}
        await bus.publish(wire.PRICES_TICKS, {"seq": 2, "ts": 6.0, "prices": {"KO": tick}})
        await wait_until(lambda: shared)
        assert [p["id"] for p in shared[0][1]["topics"]["KO"]] == ["watchlist-quote-KO"]
