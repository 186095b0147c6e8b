"""The order form's rules without servers: OrderSchema, marketability, the rendered form."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import ValidationError

from services.orders.components import OrderComponent
from services.orders.domain import crosses, describe_fill, fill_price, touch_price
from services.orders.schema import OrderSchema
from services.orders.venue import quotes_of
from shared.components import PartsTracker, render
from shared.components.runtime import validation_errors

MARKET = {"symbol": "AAPL", "side": "buy", "quantity": "10", "client_order_id": "abc"}


def errors(payload: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(ValidationError) as info:
        OrderSchema.model_validate(payload)
    return validation_errors(info.value)


def test_valid_market_order_normalises_symbol_and_form_strings() -> None:
    data = OrderSchema.model_validate({**MARKET, "symbol": " aapl ", "limit_price": ""})
    assert data.symbol == "AAPL" and data.quantity == 10
    assert data.order_type == "market" and data.limit_price is None
    assert data.client_order_id == "abc"


def test_valid_limit_order_keeps_an_exact_decimal() -> None:
    data = OrderSchema.model_validate({**MARKET, "order_type": "limit", "limit_price": "229.1234"})
    assert data.limit_price == Decimal("229.1234")


def test_missing_client_order_id_gets_a_fresh_one() -> None:
    payload = {k: v for k, v in MARKET.items() if k != "client_order_id"}
    first, second = OrderSchema.model_validate(payload), OrderSchema.model_validate(payload)
    assert len(first.client_order_id) == 32 and first.client_order_id != second.client_order_id


@pytest.mark.parametrize(
    "quantity", [0, -1, 10_001, "1.5", "ten", "", "1.0", "1_000", "+5", True, "١٢"]
)
def test_quantity_outside_1_to_10000_is_rejected(quantity: Any) -> None:
    assert "quantity" in errors({**MARKET, "quantity": quantity})


@pytest.mark.parametrize("quantity", [1, 10_000])
def test_quantity_bounds_are_inclusive(quantity: int) -> None:
    assert OrderSchema.model_validate({**MARKET, "quantity": quantity}).quantity == quantity


def test_side_and_type_must_be_known() -> None:
    assert "side" in errors({**MARKET, "side": "hold"})
    assert "order_type" in errors({**MARKET, "order_type": "stop"})
    assert set(errors({})) >= {"symbol", "side", "quantity"}
    # Enter presses the form's default button, which names no side: the trader is asked
    assert (
        errors({**MARKET, "side": ""})["side"] == "Choose Buy or Sell: press one of the two buttons"
    )


def test_limit_order_needs_a_positive_price() -> None:
    limit = {**MARKET, "order_type": "limit"}
    assert errors(limit)["limit_price"] == "Enter a limit price for a limit order"
    assert errors({**limit, "limit_price": "  "})["limit_price"].startswith("Enter a limit")
    assert errors({**limit, "limit_price": "0"})["limit_price"] == (
        "Limit price must be greater than 0"
    )
    assert "limit_price" in errors({**limit, "limit_price": "-5"})


@pytest.mark.parametrize("price", ["NaN", "Infinity", "abc", "1.23456"])
def test_limit_price_must_be_a_finite_price_with_at_most_4_decimals(price: str) -> None:
    assert "limit_price" in errors({**MARKET, "order_type": "limit", "limit_price": price})


def test_market_order_must_not_carry_a_price() -> None:
    assert errors({**MARKET, "limit_price": "100"})["limit_price"] == (
        "Leave the limit price empty for a market order"
    )


@pytest.mark.parametrize("cid", ["", "x" * 65])
def test_client_order_id_is_1_to_64_characters(cid: str) -> None:
    assert "client_order_id" in errors({**MARKET, "client_order_id": cid})


def test_marketability_and_touch_price() -> None:
    bid, ask = Decimal("99.98"), Decimal("100.02")
    assert crosses("buy", Decimal("100.02"), bid, ask)
    assert not crosses("buy", Decimal("100.01"), bid, ask)
    assert crosses("sell", Decimal("99.98"), bid, ask)
    assert not crosses("sell", Decimal("99.99"), bid, ask)
    assert touch_price("buy", bid, ask) == ask and touch_price("sell", bid, ask) == bid
    # where an arriving order trades: market and crossing limits at the touch; else it rests
    assert fill_price("buy", None, bid, ask) == ask and fill_price("sell", None, bid, ask) == bid
    assert fill_price("buy", Decimal("300"), bid, ask) == ask  # not at its limit
    assert fill_price("buy", Decimal("100.01"), bid, ask) is None
    assert describe_fill(12, "buy", 10, "AAPL", Decimal("229.88")) == (
        "Order #12 filled: bought 10 AAPL @ 229.88"
    )
    at = datetime(2026, 11, 30, 14, 3, 22, tzinfo=UTC)
    assert describe_fill(13, "sell", 1_500, "KO", Decimal("60.1"), at) == (
        "Order #13 filled: sold 1,500 KO @ 60.10 at 14:03:22 UTC"
    )


def test_tick_quotes_skip_malformed_entries() -> None:
    quotes = quotes_of(
        {
            "AAPL": {"last": "1", "bid": "0.99", "ask": "1.01", "chg_pct": "0"},
            "BAD": {"last": "1"},
            "CROSSED": {"last": "1", "bid": "2", "ask": "1"},
            "NAN": {"last": "1", "bid": "NaN", "ask": "1"},
        }
    )
    assert quotes == {"AAPL": (Decimal("0.99"), Decimal("1.01"))}
    assert quotes_of(None) == {}


def _component(**state: Any) -> OrderComponent:
    component = OrderComponent()
    component.state = {
        "status": "",
        "order_status": None,
        "order_id": None,
        "message": "",
        "client_order_id": "cid-1",
        "symbols": ["AAPL", "MSFT"],
        "open_orders": [
            {"id": 7, "status": "open", "side": "buy", "order_type": "limit", "qty": 5,
             "symbol": "AAPL", "price": Decimal("200"), "reason": None},
        ],
        "recent_orders": [
            {"id": 8, "status": "rejected", "side": "sell", "order_type": "limit", "qty": 5,
             "symbol": "MSFT", "price": Decimal("1"), "reason": "You hold 0 MSFT; cannot sell 5"},
        ],
        **state,
    }  # fmt: skip
    return component


def test_rendered_form_follows_the_page_conventions() -> None:
    html = render(_component()).html
    assert '<section id="order-root" class="panel" data-component="order"' in html
    assert 'hx-post="/c/order/submit"' in html and 'hx-target="#order-root-desk"' in html
    assert "data-optimistic=" in html and "Sending order…" in html
    assert "<p data-optimistic-message" in html
    assert 'name="client_order_id" value="cid-1"' in html
    assert 'class="btn btn-buy" id="order-root-buy" name="side" value="buy"' in html
    assert 'class="btn btn-sell" id="order-root-sell" name="side" value="sell"' in html
    assert '<option value="MSFT">' in html
    assert 'hx-post="/c/order/cancel"' in html and "hx-vals='{\"order_id\": 7}'" in html
    assert "order-status--rejected" in html and "cannot sell 5" in html
    assert "<table" not in html and "<tr" not in html and "style=" not in html
    assert "hx-on" not in html and "js:" not in html


def test_rendered_422_keeps_values_and_marks_bad_fields() -> None:
    component = _component(
        values={"symbol": "ZZZZ", "quantity": "3", "order_type": "limit", "limit_price": "5"},
        errors={"symbol": "Unknown symbol: ZZZZ"},
    )
    html = render(component).html
    assert 'value="ZZZZ"' in html and 'aria-invalid="true"' in html
    assert 'class="field-error"' in html and "Unknown symbol: ZZZZ" in html
    assert '<option value="limit" selected>' in html and 'value="5"' in html


def test_live_parts_are_the_order_lists_only() -> None:
    from shared.components import PartsTracker

    component = _component()
    tracker = PartsTracker()
    tracker.full(component)
    component.state["open_orders"] = []
    changes = tracker.changes(component)
    assert [p.id for p in changes.parts] == ["order-open"]
    assert changes.parts[0].html.lstrip().startswith('<div id="order-open"')
    assert "No open orders." in changes.parts[0].html


def test_a_component_without_a_live_root_publishes_its_parts_as_full() -> None:
    component = OrderComponent()
    component.state = {"open_orders": [], "recent_orders": [], "client_order_id": "abc"}
    changes = PartsTracker().full(component)
    assert changes.full
    assert [p.id for p in changes.parts] == ["order-open", "order-recent", "order-notices"]
    assert all("client_order_id" not in p.html for p in changes.parts)
