"""Settings of the orders service (env prefix `ORDERS_`) and what its ticket depends on."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.orders.queries import TickerList
from shared.outbox import OutboxRelay
from shared.settings import ServiceSettings

__all__ = ["OrdersDeps", "OrdersSettings"]

MAX_FEED_SILENCE_S = 5.0
CONFIRM_SHARE = 0.25


class OrdersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERS_", extra="ignore")

    port: int = 8003
    max_feed_silence_s: float = MAX_FEED_SILENCE_S
    """Market orders are refused while the price feed has been silent this long."""
    confirm_share: float = Field(CONFIRM_SHARE, ge=0, le=1)
    """A buy costing more than this share of the buying power (cash) asks for a second,
    explicit confirmation in the ticket."""


@dataclass(frozen=True)
class OrdersDeps:
    """What the order ticket sees as ``self.request.deps``: the service's limits, the
    outbox relay to wake once an order's transaction has committed (none in unit tests:
    the defaults), the process's list of tickers, and the venue's :meth:`recheck` for an
    order that rests."""

    max_feed_silence_s: float = MAX_FEED_SILENCE_S
    confirm_share: float = CONFIRM_SHARE
    outbox: OutboxRelay | None = None
    tickers: TickerList = field(default_factory=TickerList)
    recheck: Callable[[Mapping[str, tuple[Decimal, Decimal]]], None] | None = None

    @classmethod
    def of(
        cls,
        settings: OrdersSettings,
        outbox: OutboxRelay,
        recheck: Callable[[Mapping[str, tuple[Decimal, Decimal]]], None] | None = None,
    ) -> OrdersDeps:
        return cls(settings.max_feed_silence_s, settings.confirm_share, outbox, recheck=recheck)
