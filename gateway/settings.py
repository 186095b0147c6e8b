"""Settings of the gateway (env prefix ``GATEWAY_``)."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from shared.settings import DEV_PLACEHOLDER_SECRET, ServiceSettings

__all__ = ["GatewaySettings"]


class GatewaySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    port: int = 8000
    session_secret: SecretStr = SecretStr(DEV_PLACEHOLDER_SECRET)
    session_max_age_s: int = 12 * 3600
    fragment_timeout_ms: int = 500
    allowed_origins: list[str] = []
    portfolio_url: str = "http://127.0.0.1:8001"
    watchlist_url: str = "http://127.0.0.1:8002"
    orders_url: str = "http://127.0.0.1:8003"
    risk_url: str = "http://127.0.0.1:8004"
