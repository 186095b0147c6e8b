"""PortfolioComponent without servers: P&L arithmetic, live parts, nothing on no change."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from services.portfolio.components import TOTALS_ID, PortfolioComponent
from shared.components import PartsTracker


def test_price_tick_updates_portfolio_pnl() -> None:
    # the seed's test, verbatim but for the import
    component = PortfolioComponent()
    component.state = {
        "positions": [
            {
                "symbol": "AAPL",
                "qty": 10,
                "avg_cost": 180.0,
                "last": 180.0,
                "pnl": 0,
            }
        ],
        "total_value": 1800,
    }
    asyncio.run(
        component.on_ws_message(
            {
                "event": "price_tick",
                "prices": {"AAPL": 195.0},
            }
        )
    )
    assert component.state["positions"][0]["pnl"] == 150.0
    assert component.state["total_value"] == 1950.0


def _position(ticker: str, qty: int, avg: str, last: str, prev: str | None = None) -> dict:
    return {
        "id": f"portfolio-row-{ticker}",
        "symbol": ticker,
        "qty": qty,
        "avg_cost": Decimal(avg),
        "last": Decimal(last),
        "pnl": (Decimal(last) - Decimal(avg)) * qty,
        "prev_close": Decimal(prev) if prev else None,
        "day_chg": None,
        "dir": "",
    }


def _component() -> PortfolioComponent:
    component = PortfolioComponent()
    component.state = {
        "positions": [
            _position("AAPL", 10, "180.00", "180.00", "179.00"),
            _position("MSFT", 5, "400.00", "410.00", "405.00"),
        ],
        "total_value": Decimal("3850.00"),
        "total_pnl": Decimal("50.00"),
        "day_change": Decimal(0),
    }
    return component


def test_wire_tick_updates_only_changed_rows_and_totals() -> None:
    component = _component()
    tracker = PartsTracker()
    tracker.full(component)
    asyncio.run(
        component.on_ws_message(
            {
                "event": "price_tick",
                "seq": 7,
                "ts": 1.0,
                "prices": {
                    "MSFT": {"last": "412.50", "bid": "412.45", "ask": "412.55", "chg_pct": "1.85"},
                    "TSLA": {"last": "250.00", "bid": "249.9", "ask": "250.1", "chg_pct": "0"},
                },
            }
        )
    )
    changes = tracker.changes(component)
    assert not changes.full
    assert [p.id for p in changes.parts] == ["portfolio-row-MSFT", TOTALS_ID]
    row = changes.parts[0].html
    assert 'id="portfolio-row-MSFT"' in row and "flash-up" in row
    assert "412.50" in row and "+62.50" in row  # (412.50 − 400) × 5
    assert "+37.50" in row  # day change (412.50 − 405) × 5
    assert 'class="num total-value">3,862.50<' in changes.parts[1].html
    assert component.state["total_pnl"] == Decimal("62.50")


def test_falling_price_flashes_down_and_colours_the_loss() -> None:
    component = _component()
    tracker = PartsTracker()
    tracker.full(component)
    asyncio.run(component.on_ws_message({"event": "price_tick", "prices": {"AAPL": "170"}}))
    row = tracker.changes(component).parts[0].html
    assert "flash-down" in row and "pnl-neg" in row and "-100.00" in row


def test_tick_for_symbols_not_held_publishes_nothing() -> None:
    component = _component()
    tracker = PartsTracker()
    tracker.full(component)
    asyncio.run(component.on_ws_message({"event": "price_tick", "prices": {"TSLA": "1"}}))
    assert not tracker.changes(component)
    # an unchanged price is no change either
    asyncio.run(component.on_ws_message({"event": "price_tick", "prices": {"AAPL": "180.00"}}))
    assert not tracker.changes(component)


def test_full_render_keeps_the_seed_class_names() -> None:
    from shared.components import render

    html = render(_component()).html
    for name in ("positions-table", "pnl-pos", "total-value", 'data-component="portfolio"'):
        assert name in html
    assert "<table" not in html and "<tr" not in html  # live rows are ARIA-role divs
