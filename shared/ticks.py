"""Reading a price tick as components receive it.

On the wire (``prices.ticks``) each ticker maps to ``{last, bid, ask, chg_pct}``; the
seed's tests send a bare last price. Both are accepted.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from shared.domain import dec

__all__ = ["tick_field", "tick_last"]


def tick_last(quote: Any) -> Decimal:
    return tick_field(quote, "last")


def tick_field(quote: Any, name: str) -> Decimal:
    if isinstance(quote, dict):
        return dec(quote[name])
    if name != "last":
        raise KeyError(name)
    return dec(quote)
