"""Reading a price tick as services receive it.

On the wire (``prices.ticks``) each ticker maps to ``{last, bid, ask, chg_pct}``; the
seed's tests send a bare last price. Components accept both (:func:`tick_last`,
:func:`price_moves`); what trades or follows the feed takes only whole, valid quotes
(:func:`quotes_of_tick`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from decimal import Decimal
from typing import Any, Literal, TypedDict, TypeVar

from shared.domain import Quote, checked_quote, dec

__all__ = [
    "PricedRow",
    "checked_entry",
    "price_direction",
    "price_moves",
    "quotes_of_tick",
    "tick_field",
    "tick_last",
]


def tick_last(quote: Any) -> Decimal:
    return tick_field(quote, "last")


def tick_field(quote: Any, name: str) -> Decimal:
    if isinstance(quote, dict):
        return dec(quote[name])
    if name != "last":
        raise KeyError(name)
    return dec(quote)


def checked_entry(entry: object) -> Quote:
    """The quote of one tick entry (``{last, bid, ask, …}``), whole and valid
    (:func:`shared.domain.checked_quote`); ``ValueError`` otherwise."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"not a quote: {entry!r}")
    try:
        return checked_quote(entry["last"], entry["bid"], entry["ask"])
    except KeyError as exc:
        raise ValueError(f"not a whole quote: {entry!r}") from exc


def quotes_of_tick(prices: object) -> dict[str, Quote]:
    """The quotes in a ``prices.ticks`` message's ``prices``; an entry that is not a whole
    valid quote (:func:`checked_entry`) is skipped."""
    quotes: dict[str, Quote] = {}
    if not isinstance(prices, Mapping):
        return quotes
    for ticker, entry in prices.items():
        try:
            quotes[str(ticker)] = checked_entry(entry)
        except ValueError:
            continue
    return quotes


class PricedRow(TypedDict):
    """What :func:`price_moves` reads of a component's row."""

    symbol: str
    last: Decimal


R = TypeVar("R", bound=PricedRow)


def price_moves(rows: Iterable[R], prices: Mapping[str, Any]) -> list[tuple[R, Decimal, Decimal]]:
    """``(row, old last, new last)`` of each row whose symbol's last price the tick's
    ``prices`` changes; the caller applies the new price to the row."""
    moves = []
    for row in rows:
        quote = prices.get(row["symbol"])
        if quote is None:
            continue
        # tick_last, inline: this runs for every row of every trader on every tick
        last = quote["last"] if isinstance(quote, dict) else quote
        if type(last) is not Decimal:
            last = dec(last)
        old = row["last"]
        if type(old) is not Decimal:
            old = dec(old)
        if last != old:
            moves.append((row, old, last))
    return moves


def price_direction(old: Decimal, new: Decimal) -> Literal["up", "down", ""]:
    """How a last price moved: ``"up"``, ``"down"`` or ``""`` (unchanged)."""
    if new == old:
        return ""
    return "up" if new > old else "down"
