"""The pricefeed process's settings (env prefix ``PRICEFEED_``)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

__all__ = ["PricefeedSettings", "ProviderKind"]

ProviderKind = Literal["simulation", "http"]


class PricefeedSettings(ServiceSettings):
    """Market data loop, quote provider and risk monitor settings."""

    model_config = SettingsConfigDict(extra="ignore", env_prefix="PRICEFEED_")

    port: int = 8005
    tick_interval_ms: int = Field(default=250, ge=10, le=60_000)
    provider: ProviderKind = "simulation"
    # Simulation: None draws a seed from the OS and logs it, so a run can be replayed.
    seed: int | None = None
    # One simulated trading day passes in this many real seconds (volatility is per day).
    sim_day_seconds: float = Field(default=900.0, gt=0)
    # HTTP quote API
    http_url: str = ""
    http_timeout_s: float = Field(default=1.0, gt=0)
    http_retries: int = Field(default=2, ge=0, le=10)
    http_backoff_s: float = Field(default=0.05, ge=0)
    # Batched database writes of prices and margin, at most once per interval
    db_write_interval_s: float = Field(default=1.0, gt=0)
    # accounts.margin_used (for operators; no service reads it) at most this often
    margin_write_interval_s: float = Field(default=10.0, ge=0)
    # The leader's lease (a standby takes over a dead leader's within about 1.25 × this
    # plus one tick): shorter than the shared LEASE_TTL_S so a takeover stays under the
    # orders service's ORDERS_MAX_FEED_SILENCE_S (5 s).
    lease_ttl_s: float = Field(3.0, gt=0.5, validation_alias="PRICEFEED_LEASE_TTL_S")

    @property
    def tick_interval_s(self) -> float:
        return self.tick_interval_ms / 1000

    @model_validator(mode="after")
    def _http_needs_url(self) -> PricefeedSettings:
        if self.provider == "http" and not self.http_url:
            raise ValueError("PRICEFEED_PROVIDER=http needs PRICEFEED_HTTP_URL")
        return self
