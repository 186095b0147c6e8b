"""Settings of the orders service (env prefix `ORDERS_`)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

__all__ = ["OrdersSettings"]


class OrdersSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERS_", extra="ignore")

    port: int = 8003
    max_feed_silence_s: float = 5.0
    """Market orders are refused while the price feed has been silent this long."""
    confirm_share: float = Field(0.25, ge=0, le=1)
    """A buy costing more than this share of the buying power (cash) asks for a second,
    explicit confirmation in the ticket."""
