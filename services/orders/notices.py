"""What the order ticket tells a trader about a resting order that changed away from it
(filled by the venue, cancelled from another tab, rejected): its notices."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypedDict

from services.orders import domain as rules
from services.orders.queries import OrderRow

__all__ = ["NOTICE_LIMIT", "Notice", "notice_of", "with_notice"]

NOTICE_LIMIT = 3  # the newest notices shown


class Notice(TypedDict):
    """A resting order that changed away from the ticket (filled, cancelled, rejected)."""

    key: str
    kind: str
    text: str


def notice_of(resting: OrderRow, status: Any, price: Any, ts: Any) -> Notice | None:
    """What to tell the trader when a resting order (``resting``, as listed while open)
    changed away from the ticket: filled by the venue (at ``price``, epoch ms ``ts``),
    cancelled or rejected."""
    oid = resting["id"]
    if status == "filled" and price is not None:
        when = (
            datetime.fromtimestamp(float(ts) / 1000, UTC) if isinstance(ts, int | float) else None
        )
        text = rules.describe_fill(
            oid, resting["side"], resting["qty"], resting["symbol"], Decimal(str(price)), when
        )
    elif status == "cancelled":
        text = f"Order #{oid} cancelled: {resting['side']} {resting['qty']:,} {resting['symbol']}"
    elif status == "rejected":
        text = f"Order #{oid} rejected"
    else:
        return None
    return {"key": f"{oid}-{status}", "kind": str(status), "text": text}


def with_notice(notices: list[Notice], notice: Notice | None) -> list[Notice]:
    """``notices`` with ``notice`` first (replacing one with its key), the newest kept."""
    if notice is None:
        return notices
    others = [n for n in notices if n["key"] != notice["key"]]
    return [notice, *others][:NOTICE_LIMIT]
