"""WatchlistComponent without servers: ticks update bid/ask/last/chg% and the sparkline."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from services.watchlist.components import SPARK_POINTS, WatchlistComponent
from shared.charts import sparkline_points
from shared.components import PartsTracker, render


def _item(ticker: str, last: str) -> dict:
    history = [Decimal(last), Decimal(last)]
    return {
        "id": f"watchlist-row-{ticker}",
        "ticker": ticker,
        "name": ticker + " Inc.",
        "bid": Decimal(last) - Decimal("0.01"),
        "ask": Decimal(last) + Decimal("0.01"),
        "last": Decimal(last),
        "chg_pct": Decimal(0),
        "dir": "",
        "history": history,
        "spark": sparkline_points(history),
    }


def _component() -> WatchlistComponent:
    component = WatchlistComponent()
    component.state = {"items": [_item("AAPL", "100.00"), _item("KO", "60.00")], "suggestions": []}
    return component


def test_tick_updates_bid_ask_last_and_change() -> None:
    component = _component()
    tracker = PartsTracker()
    tracker.full(component)
    asyncio.run(
        component.on_ws_message(
            {
                "event": "price_tick",
                "prices": {
                    "AAPL": {"last": "101.25", "bid": "101.20", "ask": "101.30", "chg_pct": "1.25"}
                },
            }
        )
    )
    item = component.state["items"][0]
    assert (item["bid"], item["ask"], item["last"], item["chg_pct"]) == (
        Decimal("101.20"),
        Decimal("101.30"),
        Decimal("101.25"),
        Decimal("1.25"),
    )
    changes = tracker.changes(component)
    assert [p.id for p in changes.parts] == ["watchlist-row-AAPL"]
    html = changes.parts[0].html
    assert "flash-up" in html and "chg-pos" in html and "+1.25%" in html
    assert "101.20" in html and "101.30" in html and 'class="sparkline"' in html


def test_seed_style_tick_with_bare_last_price() -> None:
    component = _component()
    asyncio.run(component.on_ws_message({"event": "price_tick", "prices": {"KO": 59.5}}))
    assert component.state["items"][1]["last"] == Decimal("59.5")
    assert component.state["items"][1]["dir"] == "down"


def test_sparkline_keeps_a_bounded_history() -> None:
    component = _component()
    for i in range(SPARK_POINTS + 10):
        asyncio.run(
            component.on_ws_message({"event": "price_tick", "prices": {"AAPL": str(100 + i % 7)}})
        )
    assert len(component.state["items"][0]["history"]) == SPARK_POINTS


def test_sparkline_geometry() -> None:
    points = sparkline_points([Decimal(1), Decimal(3), Decimal(2)], width=80, height=20)
    assert points == "0.0,19.0 40.0,1.0 80.0,10.0"
    assert sparkline_points([Decimal(5), Decimal(5)]) == "0.0,10.0 80.0,10.0"


def test_full_render_has_seed_classes_and_no_table_elements() -> None:
    html = render(_component()).html
    assert "watchlist-table" in html and "last-price" in html and "chg-pos" in html
    assert 'data-component="watchlist"' in html and "<tr" not in html


def test_live_instance_keeps_price_history_when_adopting_an_event_state() -> None:
    live = _component()
    for price in ("101", "102", "103"):
        asyncio.run(live.on_ws_message({"event": "price_tick", "prices": {"AAPL": price}}))
    history = live.state["items"][0]["history"]
    posted = {"items": [_item("AAPL", "103.00"), _item("MSFT", "400.00")], "suggestions": []}
    live.adopt(posted)
    assert live.state["items"][0]["history"] == history  # not reset to two points
    assert [i["ticker"] for i in live.state["items"]] == ["AAPL", "MSFT"]
    assert "suggest" in WatchlistComponent.page_only_events
