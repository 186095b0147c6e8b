"""PortfolioComponent without servers: P&L arithmetic, live parts, nothing on no change."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from services.portfolio.components import SUMMARY_ID, TOTALS_ID, PortfolioComponent, _pl_cells
from shared.components import PartsTracker, PriceBook, render
from shared.components.rendering import (
    compact,
    environment_for,
    render_block,
    render_parts,
    stencil_for,
    template_dir,
)


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
        "cash": Decimal("1000.00"),
    }
    return component


def test_wire_tick_updates_only_the_traders_own_cells_and_totals() -> None:
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
    # the row itself and its last-price cell (a shared part) are not the trader's to send
    # ... and the header's account value, which moved with the total
    assert [p.id for p in changes.parts] == ["portfolio-pl-MSFT", TOTALS_ID, SUMMARY_ID]
    pl = changes.parts[0].html
    assert pl.startswith('<div class="cells" id="portfolio-pl-MSFT">')
    assert "+62.50" in pl  # (412.50 − 400) × 5
    assert "+37.50" in pl  # day change (412.50 − 405) × 5
    assert 'class="num total-value">3,862.50<' in changes.parts[1].html
    assert 'class="account-value">4,862.50<' in changes.parts[2].html  # + 1,000.00 cash
    assert 'class="account-cash">1,000.00<' in changes.parts[2].html
    assert component.state["total_pnl"] == Decimal("62.50")


def test_a_tick_rounds_the_traders_cells_half_up_into_the_views_the_parts_hold() -> None:
    component = _component()
    held = {pid: ctx["v"] for pid, (block, ctx) in component.live_parts().items() if block == "pl"}
    tick = {"AAPL": "170.125", "MSFT": {"last": "399.995", "bid": "399.99", "ask": "400"}}
    asyncio.run(component.on_ws_message({"event": "price_tick", "prices": tick}))
    aapl, msft = component.state["positions"]
    assert aapl["pl"] is held["portfolio-pl-AAPL"] and msft["pl"] is held["portfolio-pl-MSFT"]
    assert aapl["pl"] == {
        "id": "portfolio-pl-AAPL",
        "pnl": "-98.75",  # (170.125 − 180) × 10
        "pnl_cls": "pnl-neg",
        "day": "-88.75",  # (170.125 − 179) × 10
        "day_cls": "pnl-neg",
    }
    assert msft["pl"]["pnl"] == "-0.03" and msft["pl"]["day"] == "-25.03"  # −0.025, −25.025
    assert component.state["totals_view"]["pnl"] == "-98.78"  # 50 − 98.75 − 50.025
    assert component.state["summary_view"]["value"] == "4,701.23"  # 1,000 + 3,701.225


def test_last_price_cells_are_shared_parts_rendered_once_per_ticker() -> None:
    book = PriceBook()
    book.apply({"MSFT": {"last": "410", "bid": "409.9", "ask": "410.1", "chg_pct": "1"}})
    book.apply({"MSFT": {"last": "412.5", "bid": "412.4", "ask": "412.6", "chg_pct": "1.8"}})
    parts = PortfolioComponent.topic_parts(["MSFT", "NOPE"], book)
    assert list(parts) == ["MSFT"]
    [part] = parts["MSFT"]
    assert part.id == "portfolio-last-MSFT"
    assert 'data-symbol="MSFT"' in part.html and "flash-up" in part.html
    assert 'class="num last-price flash-up">412.50<' in part.html
    assert _component().topics() == ["AAPL", "MSFT"]


def test_stencils_render_exactly_what_the_template_renders() -> None:
    component = _component()
    asyncio.run(component.on_ws_message({"event": "price_tick", "prices": {"AAPL": "170"}}))
    full = render(component).html
    for part in render_parts(component):  # stencils for pl and totals, Jinja for rows
        if part.id == SUMMARY_ID:  # in the page's header, not the panel: its own block
            block = render_block(
                environment_for(template_dir(PortfolioComponent)),
                PortfolioComponent.template_name,
                "summary",
                v=component.state["summary_view"],
            )
            assert compact(part.html) == compact(block) and SUMMARY_ID not in full
            continue
        assert compact(part.html) in compact(full)
    last = PortfolioComponent.topic_parts(["AAPL"], _book("AAPL", "180", "170"))["AAPL"][0]
    assert compact(last.html) in compact(full)


def test_escaping_in_stencils_matches_jinja() -> None:
    stencil = stencil_for(PortfolioComponent, "last")
    html = stencil({"id": "x", "symbol": '<b a="1">&', "last": "1", "flash": ""})
    assert 'data-symbol="&lt;b a=&#34;1&#34;&gt;&amp;"' in html


def _book(ticker: str, *lasts: str) -> PriceBook:
    book = PriceBook()
    for last in lasts:
        book.apply({ticker: {"last": last, "bid": last, "ask": last, "chg_pct": "0"}})
    return book


def test_falling_price_colours_the_loss_and_flashes_the_shared_cell_down() -> None:
    component = _component()
    tracker = PartsTracker()
    tracker.full(component)
    asyncio.run(component.on_ws_message({"event": "price_tick", "prices": {"AAPL": "170"}}))
    pl = tracker.changes(component).parts[0].html
    assert "pnl-neg" in pl and "-100.00" in pl
    last = PortfolioComponent.topic_parts(["AAPL"], _book("AAPL", "180", "170"))["AAPL"][0]
    assert "flash-down" in last.html


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
    html = render(_component()).html
    for name in ("positions-table", "pnl-pos", "total-value", 'data-component="portfolio"'):
        assert name in html
    assert "<table" not in html and "<tr" not in html  # live rows are ARIA-role divs


def test_named_parts_are_rendered_without_comparing_and_never_missed_later() -> None:
    component = _component()
    tracker = PartsTracker()
    tracker.full(component)
    tick = {"event": "price_tick", "prices": {"AAPL": "181"}}
    named = asyncio.run(component.on_ws_message(tick))
    assert list(named or ()) == ["portfolio-pl-AAPL", TOTALS_ID, SUMMARY_ID]
    assert [p.id for p in tracker.changed(component, named).parts] == list(named)
    # a later full comparison cannot take what was sent for what it last copied: it sends
    # those parts again rather than risk missing a change
    assert [p.id for p in tracker.changes(component).parts] == list(named)
    assert not tracker.changes(component)


def test_a_fraction_of_a_cent_below_zero_is_shown_as_no_loss() -> None:
    # an average cost kept to 12 places: (100.0033 − 100.003333333333) × 3 = −0.0001
    cells = _pl_cells(Decimal("-0.0001"), Decimal("-0.004"))
    assert (cells["pnl"], cells["pnl_cls"]) == ("+0.00", "pnl-pos")
    assert (cells["day"], cells["day_cls"]) == ("+0.00", "pnl-pos")
    cells = _pl_cells(Decimal("-0.005"), None)  # half a cent rounds to a loss: shown as one
    assert (cells["pnl"], cells["pnl_cls"]) == ("-0.01", "pnl-neg")
