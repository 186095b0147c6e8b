"""Order rules as pure functions: when an order crosses, at what price, what to say.

The financial formulas themselves (average cost, realised P&L, margin) live in
``shared.domain``; this module only decides which of them applies to an order.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from shared.domain import utilisation_pct

__all__ = [
    "MAX_UTILISATION_PCT",
    "Rejected",
    "Side",
    "check_margin_after",
    "crosses",
    "describe_fill",
    "describe_open",
    "touch_price",
]

Side = Literal["buy", "sell"]

MAX_UTILISATION_PCT = Decimal(100)


class Rejected(Exception):
    """An order the venue refuses; ``field`` is the form field the reason belongs to."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(reason)


def check_margin_after(used: Decimal, limit: Decimal) -> None:
    """Pre-trade: the margin an account would use after the order must fit its limit
    (utilisation at most 100 %); a limit of 0 fits no margin at all."""
    if used <= 0:
        return
    if limit <= 0:
        raise Rejected("quantity", "No margin available: this account's margin limit is 0.00")
    after = utilisation_pct(used, limit)
    if after > MAX_UTILISATION_PCT:
        raise Rejected(
            "quantity",
            f"Margin limit exceeded: this order would take utilisation to {after:.1f}% "
            f"(maximum {MAX_UTILISATION_PCT}%)",
        )


def touch_price(side: str, bid: Decimal, ask: Decimal) -> Decimal:
    """Where a marketable order trades: buys lift the ask, sells hit the bid."""
    return ask if side == "buy" else bid


def crosses(side: str, limit_price: Decimal, bid: Decimal, ask: Decimal) -> bool:
    """A buy limit at or above the ask, or a sell limit at or below the bid, is marketable."""
    return limit_price >= ask if side == "buy" else limit_price <= bid


def describe_fill(
    order_id: int, side: str, qty: int, ticker: str, price: Decimal, at: datetime | None = None
) -> str:
    """``Order #12 filled: bought 10 AAPL @ 229.88 at 14:03:22 UTC``."""
    verb = "bought" if side == "buy" else "sold"
    when = f" at {at.astimezone(UTC):%H:%M:%S} UTC" if at is not None else ""
    return f"Order #{order_id} filled: {verb} {qty:,} {ticker} @ {price:,.2f}{when}"


def describe_open(order_id: int, side: str, qty: int, ticker: str, limit: Decimal) -> str:
    """``Order #13 open: buy 10 AAPL limit 200.00``."""
    return f"Order #{order_id} open: {side} {qty:,} {ticker} limit {limit:,.2f}"
