"""Reading ticks: valid quotes for what trades or follows the feed, price moves for rows."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shared.domain import Quote
from shared.ticks import PricedRow, price_direction, price_moves, quotes_of_tick

D = Decimal


def test_quotes_of_a_tick_are_whole_valid_quotes() -> None:
    prices: dict[str, Any] = {
        "OK": {"last": "1.50", "bid": "1.49", "ask": "1.51", "chg_pct": "0"},
        "CROSSED": {"last": "1", "bid": "2", "ask": "1"},
        "NOLAST": {"bid": "1", "ask": "1"},
        "NAN": {"last": "1", "bid": "NaN", "ask": "1"},
        "BARE": "1",
    }
    assert quotes_of_tick(prices) == {"OK": Quote(D("1.50"), D("1.49"), D("1.51"))}
    assert quotes_of_tick(None) == {} and quotes_of_tick([]) == {}


def test_price_moves_name_the_rows_a_tick_moves() -> None:
    rows: list[PricedRow] = [
        {"symbol": "A", "last": D(10)},
        {"symbol": "B", "last": D(20)},
        {"symbol": "C", "last": D(30)},
    ]
    prices = {"A": {"last": "10.5", "bid": "10.4", "ask": "10.6"}, "B": 20.0}  # seed: bare
    assert price_moves(rows, prices) == [(rows[0], D(10), D("10.5"))]
    assert price_moves([], prices) == []


def test_price_direction() -> None:
    assert price_direction(D(1), D(2)) == "up"
    assert price_direction(D(2), D(1)) == "down"
    assert price_direction(D(1), D("1.00")) == ""


def test_price_moves_read_every_form_of_quote_and_row() -> None:
    class WireQuote(dict[str, str]):
        pass

    rows: list[Any] = [
        {"symbol": "A", "last": 10.0},  # the seed's float state
        {"symbol": "B", "last": "20"},
        {"symbol": "C", "last": D(30)},
        {"symbol": "E", "last": D(5)},
    ]
    prices = {"A": WireQuote(last="10.25"), "B": 21, "C": D("30.00"), "E": "5.5"}
    assert price_moves(rows, prices) == [
        (rows[0], D("10.0"), D("10.25")),
        (rows[1], D(20), D(21)),
        (rows[3], D(5), D("5.5")),
    ]
    assert all(type(old) is Decimal for _row, old, _last in price_moves(rows, prices))
