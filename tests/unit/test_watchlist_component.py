"""WatchlistComponent without servers: quotes are shared parts; a trader's rows are theirs."""

from __future__ import annotations

import asyncio
from decimal import Decimal

from services.watchlist.components import SPARK_POINTS, WatchlistComponent
from shared.charts import sparkline_points
from shared.components import ComponentContext, PartsTracker, PriceBook, render
from shared.components.rendering import compact, render_parts
from shared.components.testing import trader


def _item(ticker: str, last: str, prev: str | None = None) -> dict:
    return {
        "id": f"watchlist-row-{ticker}",
        "ticker": ticker,
        "name": ticker + " Inc.",
        "stored": (
            Decimal(last),
            Decimal(last) - Decimal("0.01"),
            Decimal(last) + Decimal("0.01"),
            Decimal(prev or last),
        ),
    }


def _component(book: PriceBook | None = None) -> WatchlistComponent:
    component = WatchlistComponent(ComponentContext(user=trader(), prices=book))
    component.state = {"items": [_item("AAPL", "100.00"), _item("KO", "60.00")], "suggestions": []}
    return component


def _quote(last: str, bid: str, ask: str, chg: str) -> dict[str, str]:
    return {"last": last, "bid": bid, "ask": ask, "chg_pct": chg}


def test_a_tick_is_rendered_once_per_ticker_for_every_watcher() -> None:
    book = PriceBook()
    book.apply({"AAPL": _quote("100.00", "99.99", "100.01", "0")})
    book.apply({"AAPL": _quote("101.25", "101.20", "101.30", "1.25")})
    parts = WatchlistComponent.topic_parts(["AAPL"], book)
    [part] = parts["AAPL"]
    assert part.id == "watchlist-quote-AAPL"
    assert 'data-symbol="AAPL"' in part.html
    assert "flash-up" in part.html and "chg-pos" in part.html and "+1.25%" in part.html
    assert "101.20" in part.html and "101.30" in part.html and 'class="sparkline"' in part.html
    assert WatchlistComponent.topic_parts(["MSFT"], book) == {}  # nothing known, nothing sent


def test_a_quote_is_formatted_once_for_every_watcher_and_mount_until_it_changes() -> None:
    book = PriceBook()
    book.apply(
        {"AAPL": _quote("100.00", "99.99", "100.01", "0"), "KO": _quote("60", "59", "61", "0")}
    )
    made: list[str] = []

    def make(ticker: str) -> dict[str, str]:
        made.append(ticker)
        return {"ticker": ticker}

    first = book.view("quote", "AAPL", lambda: make("AAPL"))
    assert book.view("quote", "AAPL", lambda: make("AAPL")) is first and made == ["AAPL"]
    book.apply({"KO": _quote("61", "60", "62", "1")})  # another ticker: still kept
    assert book.view("quote", "AAPL", lambda: make("AAPL")) is first and made == ["AAPL"]
    book.apply({"AAPL": _quote("101.25", "101.20", "101.30", "1.25")})
    assert book.view("quote", "AAPL", lambda: make("AAPL")) is not first
    assert made == ["AAPL", "AAPL"]

    # the watchlist: a mount after the tick shows it, and a tick's part is the same view
    html = render(_component(book)).html
    assert "101.20" in html and "flash-up" in html
    [part] = WatchlistComponent.topic_parts(["AAPL"], book)["AAPL"]
    assert compact(part.html) in compact(html)


def test_a_tick_changes_nothing_of_the_traders_own() -> None:
    component = _component()
    tracker = PartsTracker()
    tracker.full(component)
    message = {"event": "price_tick", "prices": {"AAPL": _quote("101", "100.9", "101.1", "1")}}
    assert asyncio.run(component.on_ws_message(message)) is False
    assert not tracker.changes(component)
    assert component.topics() == ["AAPL", "KO"]


def test_seed_style_tick_with_bare_last_price_moves_the_book() -> None:
    book = PriceBook()
    book.seed([("KO", "60.00", "59.99", "60.01", "59.00")])
    book.apply({"KO": 59.5})
    assert book.last("KO") == Decimal("59.5") and book.direction("KO") == "down"


def test_sparkline_keeps_a_bounded_history_in_the_book() -> None:
    book = PriceBook()
    for i in range(SPARK_POINTS + 10):
        book.apply({"AAPL": str(100 + i % 7)})
    assert len(book.history("AAPL")) == SPARK_POINTS


def test_sparkline_geometry() -> None:
    points = sparkline_points([Decimal(1), Decimal(3), Decimal(2)], width=80, height=20)
    assert points == "0,19 40,1 80,10"
    assert sparkline_points([Decimal(5), Decimal(5)]) == "0,50 290,50"


def test_full_render_has_seed_classes_and_no_table_elements() -> None:
    html = render(_component()).html
    assert "watchlist-table" in html and "last-price" in html and "chg-pos" in html
    assert 'data-component="watchlist"' in html and "<tr" not in html


def test_full_render_shows_the_books_quote_and_the_stored_one_before_any_tick() -> None:
    book = PriceBook()
    book.apply({"AAPL": _quote("123.45", "123.40", "123.50", "2")})
    html = render(_component(book)).html
    assert "123.45" in html  # from the book
    assert "60.00" in html  # KO: not in the book, as stored
    shared = WatchlistComponent.topic_parts(["AAPL"], book)["AAPL"][0]
    assert compact(shared.html) in compact(
        html
    )  # one markup: the shared part is what the full render holds
    for part in render_parts(_component(book)):
        assert compact(part.html) in compact(html)


def test_suggestions_stay_on_the_page() -> None:
    assert "suggest" in WatchlistComponent.page_only_events
