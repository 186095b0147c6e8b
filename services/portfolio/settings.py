"""Settings of the portfolio service (env prefix `PORTFOLIO_`)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

__all__ = ["PortfolioSettings"]


class PortfolioSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="PORTFOLIO_", extra="ignore")

    port: int = 8001
