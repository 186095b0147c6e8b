"""What the order component tells a trader about resting orders ended away from the
ticket: a fill by the venue, a cancel from another tab."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from services.orders.components import OrderComponent
from services.orders.notices import NOTICE_LIMIT, notice_of

RESTING = {"id": 69, "side": "buy", "qty": 1_200, "symbol": "AAPL", "status": "open", "price": None}


def test_a_fill_says_what_price_and_when() -> None:
    notice = notice_of(RESTING, "filled", "229.875", 1_764_511_402_000)
    assert notice == {
        "key": "69-filled",
        "kind": "filled",
        "text": "Order #69 filled: bought 1,200 AAPL @ 229.88 at 14:03:22 UTC",
    }
    assert notice_of(RESTING, "cancelled", None, None) == {
        "key": "69-cancelled",
        "kind": "cancelled",
        "text": "Order #69 cancelled: buy 1,200 AAPL",
    }
    assert notice_of(RESTING, "open", None, None) is None


def _state(open_orders: list[dict[str, Any]], recent: list[dict[str, Any]]) -> dict[str, Any]:
    return {"open_orders": open_orders, "recent_orders": recent}


def test_an_event_that_ended_a_resting_order_leaves_one_notice() -> None:
    live = OrderComponent(state={**_state([RESTING], [RESTING]), "notices": []})
    cancelled = {**RESTING, "status": "cancelled", "price": Decimal("200")}
    live.adopt(_state([], [cancelled]))  # a cancel made in another tab
    assert [n["key"] for n in live.state["notices"]] == ["69-cancelled"]
    live.adopt(_state([], [cancelled]))  # nothing more ended: nothing more to say
    assert [n["key"] for n in live.state["notices"]] == ["69-cancelled"]


def test_notices_keep_the_newest_few() -> None:
    rows = [{**RESTING, "id": i} for i in range(NOTICE_LIMIT + 2)]
    live = OrderComponent(state={**_state(rows, rows), "notices": []})
    live.adopt(_state([], [{**r, "status": "cancelled"} for r in rows]))
    assert len(live.state["notices"]) == NOTICE_LIMIT
