"""Numbers as the templates show them: money, prices, percentages, quantities, signed
changes (half-up rounding, thousands separators). The templates' filters; the views'
formatting on the hot path."""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

__all__ = ["money", "pct", "price", "qty", "signed"]


def _decimal(value: Any) -> Decimal | None:
    if type(value) is Decimal:
        return value
    if value is None or value == "":
        return None
    try:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


_QUANTUM = {places: Decimal(1).scaleb(-places) for places in range(9)}
# format specs, built once: a nested ``{places}`` in an f-string costs as much as the rounding
_GROUPED = {places: f",.{places}f" for places in _QUANTUM}
_SIGNED = {places: f"+,.{places}f" for places in _QUANTUM}


def _round(number: Decimal, places: int) -> Decimal:
    quantum = _QUANTUM.get(places)
    if quantum is None:
        quantum = Decimal(1).scaleb(-places)
    # positional: ``rounding=`` as a keyword doubles the cost of this hot call
    rounded = number.quantize(quantum, ROUND_HALF_UP)
    return rounded if rounded else abs(rounded)  # no "-0.00": a zero has no sign


def money(value: Any, places: int = 2) -> str:
    """``1234.5`` → ``"1,234.50"`` (half up; ``-0.001`` → ``"0.00"``)."""
    if type(value) is Decimal and places in _GROUPED:  # the hot path: one call, not four
        rounded = value.quantize(_QUANTUM[places], ROUND_HALF_UP)
        return format(rounded if rounded else abs(rounded), _GROUPED[places])
    number = _decimal(value)
    if number is None:
        return ""
    return format(_round(number, places), _GROUPED.get(places) or f",.{places}f")


def price(value: Any, places: int = 4) -> str:
    """A unit price as precise as it is stored, never fewer than two places:
    ``28.6774`` → ``"28.6774"``, ``28.6`` → ``"28.60"`` (an average cost the trader can
    check the P&L against)."""
    number = _decimal(value)
    if number is None:
        return ""
    rounded = _round(number, places)
    exponent = rounded.normalize().as_tuple().exponent
    shown = max(2, -exponent) if isinstance(exponent, int) and rounded else 2
    return f"{rounded:,.{min(shown, places)}f}"


def pct(value: Any) -> str:
    """``12.345`` → ``"12.35"`` (add the ``%`` in the template)."""
    return money(value, 2)


def qty(value: Any) -> str:
    """``1500`` → ``"1,500"``; fractional quantities keep their decimals."""
    number = _decimal(value)
    if number is None:
        return ""
    if number == number.to_integral_value():
        return f"{int(number):,}"
    return f"{number.normalize():,f}"


def signed(value: Any, places: int = 2) -> str:
    """``12.3`` → ``"+12.30"``, ``-4`` → ``"-4.00"``; what rounds to 0 is ``"+0.00"``
    (``-0.001`` is no loss to show)."""
    if type(value) is Decimal and places in _SIGNED:
        rounded = value.quantize(_QUANTUM[places], ROUND_HALF_UP)
        return format(rounded if rounded else abs(rounded), _SIGNED[places])
    number = _decimal(value)
    if number is None:
        return ""
    return format(_round(number, places), _SIGNED.get(places) or f"+,.{places}f")
