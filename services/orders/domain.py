"""Order rules as pure functions: when an order crosses, at what price, what to say.

The financial formulas themselves (average cost, realised P&L, margin) live in
``shared.domain``; this module only decides which of them applies to an order.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_CEILING, Decimal
from typing import Any, Literal

from shared.domain import can_sell, gauge_level, trade_value, utilisation_pct

__all__ = [
    "MAX_UTILISATION_PCT",
    "Assessment",
    "Rejected",
    "Side",
    "assess",
    "check_cash",
    "check_margin_after",
    "check_sell",
    "crosses",
    "describe_confirmation",
    "describe_fill",
    "describe_open",
    "fill_price",
    "intent_of",
    "same_intent",
    "touch_price",
    "whatif_view",
]

Side = Literal["buy", "sell"]

MAX_UTILISATION_PCT = Decimal(100)


class Rejected(Exception):
    """An order the venue refuses; ``field`` is the form field the reason belongs to."""

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(reason)


def same_intent(existing: Any, ticker: str, data: Mapping[str, Any]) -> bool:
    """Whether the order ``existing`` (of ``ticker``) is what the form ``data`` asks: a
    client order id used again by the same order, not by another one."""
    return (ticker, existing.side, existing.quantity, existing.order_type) == (
        data["symbol"],
        data["side"],
        data["quantity"],
        data["order_type"],
    ) and existing.limit_price == data["limit_price"]


def check_margin_after(used: Decimal, limit: Decimal) -> None:
    """Pre-trade: the margin an account would use after the order must fit its limit
    (utilisation at most 100 %); a limit of 0 fits no margin at all."""
    if used <= 0:
        return
    if limit <= 0:
        raise Rejected("quantity", "No margin available: this account's margin limit is 0.00")
    after = utilisation_pct(used, limit)
    if after > MAX_UTILISATION_PCT:
        shown = after.quantize(Decimal("0.1"), rounding=ROUND_CEILING)  # never "100.0%"
        raise Rejected(
            "quantity",
            f"Margin limit exceeded: this order would take utilisation to {shown}% "
            f"(maximum {MAX_UTILISATION_PCT}%)",
        )


def check_sell(ticker: str, qty: int, held: int, reserved: int = 0) -> None:
    """No shorting (:func:`shared.domain.can_sell`): a sell of ``qty`` must be covered by
    the ``held`` shares not ``reserved`` by open sells."""
    if not can_sell(qty, held, reserved):
        also = f" ({reserved:,} already in open sell orders)" if reserved else ""
        raise Rejected("quantity", f"You hold {held:,} {ticker}{also}; cannot sell {qty:,}")


def check_cash(qty: int, price: Decimal, cash: Decimal) -> Decimal:
    """The cost of buying ``qty`` at ``price``, which ``cash`` must cover."""
    cost = trade_value(qty, price)
    if cost > cash:
        raise Rejected(
            "quantity",
            f"Insufficient cash: {qty:,} × {price:,.2f} = {cost:,.2f}, available {cash:,.2f}",
        )
    return cost


@dataclass(frozen=True, slots=True)
class Assessment:
    """What an order would do to the account, and whether it may go: the one pre-trade
    check, shown while the trader types (the ticket's what-if) and applied on submit."""

    side: str
    qty: int
    ticker: str
    price: Decimal  # the touch for a market order, the limit for a limit order
    cost: Decimal  # qty × price, to the cent: what a buy pays, what a sell brings in
    buying_power: Decimal  # the cash a buy may spend now
    buying_power_after: Decimal
    utilisation_after: Decimal | None  # margin utilisation after a buy (%)
    level: str  # "", "warn" or "critical": the gauge's class for utilisation_after
    refusal: Rejected | None

    @property
    def allowed(self) -> bool:
        return self.refusal is None


def assess(
    side: str,
    qty: int,
    ticker: str,
    price: Decimal,
    *,
    cash: Decimal,
    margin_limit: Decimal,
    margin_after: Decimal,
    held: int,
    reserved: int,
) -> Assessment:
    """The pre-trade check of ``side`` ``qty`` ``ticker`` @ ``price``. ``margin_after``: the
    margin the account would use with this buy; ``held`` / ``reserved``: the position and
    what open sells already reserve of it. A sell may not exceed what is held and not yet
    reserved (no shorting); a buy must keep utilisation at most 100 % (a limit of 0 allows
    none) and be covered by cash."""
    cost = trade_value(qty, price)
    refusal: Rejected | None = None
    utilisation: Decimal | None = None
    if margin_limit > 0 and side != "sell":
        utilisation = utilisation_pct(margin_after, margin_limit)
    try:
        if side == "sell":
            check_sell(ticker, qty, held, reserved)
        else:
            check_margin_after(margin_after, margin_limit)
            check_cash(qty, price, cash)
    except Rejected as exc:
        refusal = exc
    after = cash + cost if side == "sell" else cash - cost
    level = (gauge_level(utilisation) or "") if utilisation is not None else ""
    return Assessment(side, qty, ticker, price, cost, cash, after, utilisation, level, refusal)


def touch_price(side: str, bid: Decimal, ask: Decimal) -> Decimal:
    """Where a marketable order trades: buys lift the ask, sells hit the bid."""
    return ask if side == "buy" else bid


def crosses(side: str, limit_price: Decimal, bid: Decimal, ask: Decimal) -> bool:
    """A buy limit at or above the ask, or a sell limit at or below the bid, is marketable."""
    return limit_price >= ask if side == "buy" else limit_price <= bid


def fill_price(side: str, limit: Decimal | None, bid: Decimal, ask: Decimal) -> Decimal | None:
    """Where an order arriving now trades: at the touch if it is a market order or a
    crossing limit; ``None`` for a limit that rests."""
    if limit is None or crosses(side, limit, bid, ask):
        return touch_price(side, bid, ask)
    return None


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


def intent_of(data: Mapping[str, Any]) -> str:
    """One order's identity for its confirmation: side, quantity, symbol, type, limit."""
    limit = data.get("limit_price")
    return f"{data['side']} {data['quantity']} {data['symbol']} {data['order_type']} {limit or ''}"


def describe_confirmation(a: Assessment) -> str:
    """``Confirm buy 247 AAPL ≈ $56,400``."""
    return f"Confirm {a.side} {a.qty:,} {a.ticker} ≈ ${a.cost:,.0f}"


def whatif_view(buy: Assessment, sell: Assessment) -> dict[str, Any]:
    """The ticket's what-if lines, formatted (the template holds no arithmetic)."""

    def line(a: Assessment) -> dict[str, str]:
        view = {
            "side": a.side,
            "cost": f"{a.cost:,.2f}",
            "price": f"{a.price:,.2f}",
            "after": f"{a.buying_power_after:,.2f}",
            "utilisation": "" if a.utilisation_after is None else f"{a.utilisation_after:.1f}",
            "level": a.level,
            "refusal": a.refusal.reason if a.refusal is not None else "",
        }
        return view

    return {"buy": line(buy), "sell": line(sell), "buying_power": f"{buy.buying_power:,.2f}"}
