"""Financial arithmetic as pure functions over ``Decimal`` (DESIGN.md §4).

No I/O here; every service that needs a formula imports it from this module.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from fractions import Fraction
from typing import Literal

__all__ = [
    "CRITICAL_PCT",
    "DEFAULT_MARGIN_RATE",
    "HYSTERESIS_PCT",
    "WARN_PCT",
    "AlertLevel",
    "Holding",
    "Quote",
    "SectorShare",
    "Trade",
    "alert_band",
    "apply_fill",
    "can_sell",
    "cents",
    "change_pct",
    "checked_quote",
    "cost_basis",
    "day_change",
    "dec",
    "gauge_level",
    "least_used_reaching",
    "margin_move",
    "margin_used",
    "market_value",
    "money",
    "next_alert_level",
    "position_margin",
    "position_pnl",
    "positive_price",
    "price_move",
    "scaled",
    "sector_exposure",
    "sector_shares",
    "sector_values",
    "share_pct",
    "total_day_change",
    "total_pnl",
    "total_value",
    "trade_value",
    "utilisation_pct",
]

AlertLevel = Literal["warn", "critical"]

WARN_PCT = Decimal(80)
CRITICAL_PCT = Decimal(95)
HYSTERESIS_PCT = Decimal(2)
DEFAULT_MARGIN_RATE = Decimal("0.5")
_HUNDRED = Decimal(100)
_CENT = Decimal("0.01")


def dec(value: Decimal | float | int | str) -> Decimal:
    """A ``Decimal`` from a wire or ORM value; floats go through ``str`` to stay exact."""
    if isinstance(value, Decimal):
        return value
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(value)


def cents(value: Decimal) -> Decimal:
    """A computed figure shown to the cent (P&L, totals): half up."""
    return value.quantize(_CENT, rounding=ROUND_HALF_UP)


def money(value: Decimal) -> Decimal:
    """Cash that moves, to the cent, half-even: each fill's value and cost, once."""
    return value.quantize(_CENT, rounding=ROUND_HALF_EVEN)


@dataclass(frozen=True, slots=True)
class Quote:
    """A symbol's last price and its bid and ask."""

    last: Decimal
    bid: Decimal
    ask: Decimal


def positive_price(value: object) -> Decimal:
    """A price from a wire or API value (text or a number), finite and above 0;
    ``ValueError`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError(f"not a price: {value!r}")
    try:
        price = dec(value)
    except ArithmeticError:  # decimal.InvalidOperation: not a number
        raise ValueError(f"not a price: {value!r}") from None
    if not price.is_finite() or price <= 0:
        raise ValueError(f"not a positive price: {value!r}")
    return price


def checked_quote(last: object, bid: object, ask: object) -> Quote:
    """The quote of three wire or API values: every price positive, the bid not above the
    ask (one rule for every quote a service takes in); ``ValueError`` otherwise."""
    quote = Quote(positive_price(last), positive_price(bid), positive_price(ask))
    if quote.bid > quote.ask:
        raise ValueError(f"crossed quote: bid {quote.bid} above ask {quote.ask}")
    return quote


@dataclass(frozen=True, slots=True)
class Holding:
    """What the formulas need to know about one position."""

    ticker: str
    qty: int
    last: Decimal
    avg_cost: Decimal = Decimal(0)
    prev_close: Decimal | None = None
    sector: str = ""
    margin_rate: Decimal = DEFAULT_MARGIN_RATE


def position_pnl(last: Decimal, avg_cost: Decimal, qty: int) -> Decimal:
    """Unrealised P&L ``(last − avg_cost) × qty``."""
    return (last - avg_cost) * qty


def market_value(last: Decimal, qty: int) -> Decimal:
    return last * qty


def trade_value(qty: int, price: Decimal) -> Decimal:
    """Cash a fill moves: ``qty × price`` to the cent (half-even)."""
    return money(price * qty)


def total_value(holdings: Iterable[Holding]) -> Decimal:
    """``Σ last × qty``."""
    return sum((market_value(h.last, h.qty) for h in holdings), Decimal(0))


def total_pnl(holdings: Iterable[Holding]) -> Decimal:
    """``Σ (last − avg_cost) × qty``."""
    return sum((position_pnl(h.last, h.avg_cost, h.qty) for h in holdings), Decimal(0))


def total_day_change(holdings: Iterable[Holding]) -> Decimal:
    """``Σ (last − prev_close) × qty`` over holdings with a previous close."""
    return sum(
        (day_change(h.last, h.prev_close, h.qty) for h in holdings if h.prev_close is not None),
        Decimal(0),
    )


def day_change(last: Decimal, prev_close: Decimal, qty: int) -> Decimal:
    return (last - prev_close) * qty


def price_move(old_last: Decimal, new_last: Decimal, qty: int) -> Decimal:
    """``(new − old) × qty``: what a move of the last price adds to a position's market
    value, its P&L and its day change alike (so totals follow a tick exactly, without
    summing every position again)."""
    return (new_last - old_last) * qty


def change_pct(last: Decimal, prev_close: Decimal) -> Decimal:
    """Percent change against the previous close, 0 when there is none."""
    if prev_close == 0:
        return Decimal(0)
    return (last - prev_close) / prev_close * _HUNDRED


def position_margin(qty: int, last: Decimal, margin_rate: Decimal) -> Decimal:
    """``qty × last × margin_rate``: one position's margin."""
    return qty * last * margin_rate


def margin_used(holdings: Iterable[Holding]) -> Decimal:
    """``Σ qty × last × margin_rate``."""
    return sum((position_margin(h.qty, h.last, h.margin_rate) for h in holdings), Decimal(0))


def margin_move(value_move: Decimal, margin_rate: Decimal) -> Decimal:
    """What a position's margin moves when its market value moves by ``value_move``
    (:func:`price_move`): ``value_move × margin_rate``, so margin used follows a tick as
    exactly as the value does."""
    return value_move * margin_rate


def utilisation_pct(used: Decimal, limit: Decimal) -> Decimal:
    """``used / limit × 100``; 0 when the limit is 0."""
    if limit == 0:
        return Decimal(0)
    return used / limit * _HUNDRED


def gauge_level(utilisation: Decimal) -> AlertLevel | None:
    """The gauge's class: warn at ≥ 80 %, critical at ≥ 95 %, no hysteresis."""
    if utilisation >= CRITICAL_PCT:
        return "critical"
    if utilisation >= WARN_PCT:
        return "warn"
    return None


def next_alert_level(
    current: AlertLevel | None, utilisation: Decimal
) -> tuple[AlertLevel | None, bool]:
    """The alert level after ``utilisation`` and whether an alert fires.

    Alerts fire only on an upward change (none → warn → critical). A level clears only
    when utilisation falls ``HYSTERESIS_PCT`` points below its threshold, so a price
    wobbling around 80 % raises one warning, not one per tick.
    """
    raw = gauge_level(utilisation)
    if current == "critical":
        if utilisation >= CRITICAL_PCT - HYSTERESIS_PCT:
            return "critical", False
        level: AlertLevel | None = "warn" if utilisation >= WARN_PCT - HYSTERESIS_PCT else None
        return level, False
    if current == "warn":
        if raw == "critical":
            return "critical", True
        if utilisation >= WARN_PCT - HYSTERESIS_PCT:
            return "warn", False
        return None, False
    return raw, raw is not None


def alert_band(level: AlertLevel | None) -> tuple[Decimal | None, Decimal | None]:
    """The utilisation range ``[low, high)`` (``None``: unbounded) in which
    :func:`next_alert_level` keeps ``level`` and fires nothing; outside it the level changes."""
    if level == "critical":
        return CRITICAL_PCT - HYSTERESIS_PCT, None
    if level == "warn":
        return WARN_PCT - HYSTERESIS_PCT, CRITICAL_PCT
    return None, WARN_PCT


def scaled(units: int, scale: int) -> Decimal:
    """``units × 10^-scale``: a fixed-point integer as a ``Decimal``."""
    return Decimal(units).scaleb(-scale)


def least_used_reaching(pct: Decimal, limit: Decimal, scale: int) -> int:
    """The least margin used, in units of ``10^-scale``, whose :func:`utilisation_pct`
    against ``limit`` (> 0) is at least ``pct``: for every integer ``n``,
    ``utilisation_pct(scaled(n, scale), limit) >= pct`` exactly when ``n >=`` the result.

    Seeded with the exact rational bound, then settled against :func:`utilisation_pct`
    itself, so the context's rounding of the division is taken into account.
    """
    if limit <= 0:
        raise ValueError(f"limit must be above 0, not {limit}")

    def reaches(n: int) -> bool:
        return utilisation_pct(scaled(n, scale), limit) >= pct

    high = math.ceil(Fraction(pct) * Fraction(limit) * Fraction(10) ** scale / 100)
    step = 1
    while not reaches(high):  # utilisation is monotonic in used: gallop up, then down
        high, step = high + step, step * 2
    low, step = high - 1, 1
    while reaches(low):
        high, low, step = low, low - step, step * 2
    while high - low > 1:  # reaches(high) and not reaches(low)
        mid = (low + high) // 2
        low, high = (low, mid) if reaches(mid) else (mid, high)
    return high


@dataclass(frozen=True, slots=True)
class SectorShare:
    sector: str
    value: Decimal
    share_pct: Decimal


def sector_exposure(holdings: Iterable[Holding]) -> list[SectorShare]:
    """Market value per sector and its share of the total, largest first."""
    return sector_shares(sector_values(holdings))


def sector_values(holdings: Iterable[Holding]) -> dict[str, Decimal]:
    """Market value per sector."""
    by_sector: dict[str, Decimal] = {}
    for h in holdings:
        by_sector[h.sector] = by_sector.get(h.sector, Decimal(0)) + market_value(h.last, h.qty)
    return by_sector


def sector_shares(by_sector: Mapping[str, Decimal]) -> list[SectorShare]:
    """Each sector's value (:func:`sector_values`, or those values moved by ticks) and its
    share of their total, largest first."""
    total = sum(by_sector.values(), Decimal(0))
    return sorted(
        (
            SectorShare(sector, value, share_pct(value, total))
            for sector, value in by_sector.items()
        ),
        key=lambda s: (-s.value, s.sector),
    )


def share_pct(value: Decimal, total: Decimal) -> Decimal:
    """``value / total × 100``: a part's share of a total; 0 when the total is 0."""
    return value / total * _HUNDRED if total else Decimal(0)


# positions.avg_cost is NUMERIC(28, 12): exact enough that ``money(avg_cost × qty)`` gives
# the cost basis back to the cent for any quantity under 10^9 (the error is qty × 5e-13).
AVG_COST_QUANTUM = Decimal("1e-12")


@dataclass(frozen=True, slots=True)
class Trade:
    """A position after one fill, and what the fill moved."""

    qty: int
    avg_cost: Decimal  # the cost basis over the quantity (12 places; 0 when flat)
    cash: Decimal  # − what a buy cost, + what a sell brought in
    realised: Decimal  # realised P&L of the fill (0 for a buy)


def cost_basis(qty: int, avg_cost: Decimal) -> Decimal:
    """What a position's shares cost, to the cent."""
    return money(avg_cost * qty)


def _average(basis: Decimal, qty: int) -> Decimal:
    return (basis / qty).quantize(AVG_COST_QUANTUM, rounding=ROUND_HALF_EVEN) if qty else Decimal(0)


def can_sell(qty: int, held: int, reserved: int = 0) -> bool:
    """No shorting: a sell takes at most what is held and not reserved by open sells."""
    return qty <= held - reserved


def apply_fill(qty: int, avg_cost: Decimal, side: str, fill_qty: int, price: Decimal) -> Trade:
    """The position ``qty`` @ ``avg_cost`` after a ``side`` fill of ``fill_qty`` @ ``price``.

    Rounding policy: money is rounded to the cent once, half-even, where it moves. A fill
    moves ``trade_value(fill_qty, price)`` in cash. The position keeps its cost basis (the
    buys' trade values less what sells took out) exactly, in cents, through ``avg_cost``
    (:data:`AVG_COST_QUANTUM`). A sell of q of Q shares takes ``basis × q / Q`` to the cent,
    or all that is left when it closes the position, and realises its proceeds less that.
    So, for any sequence of fills, Σ realised − basis left = the cash the fills moved: once
    a position is closed its realised P&L is exactly the cash it made or lost.
    """
    basis = cost_basis(qty, avg_cost)
    value = trade_value(fill_qty, price)
    if side == "buy":
        return Trade(qty + fill_qty, _average(basis + value, qty + fill_qty), -value, Decimal(0))
    if not can_sell(fill_qty, qty):
        raise ValueError(f"cannot sell {fill_qty}, position holds {qty}")
    left = qty - fill_qty
    taken = basis if left == 0 else money(basis * fill_qty / qty)
    return Trade(left, _average(basis - taken, left), value, value - taken)
