"""Settings of the watchlist service (env prefix `WATCHLIST_`)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings

__all__ = ["WatchlistSettings"]


class WatchlistSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="WATCHLIST_", extra="ignore")

    port: int = 8002
