"""Settings of the risk service (env prefix `RISK_`)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

__all__ = ["RiskSettings"]


class RiskSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="RISK_", extra="ignore")

    port: int = 8004
