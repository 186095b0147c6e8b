"""The watchlist service: WatchlistComponent over HTTP and live over NATS."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from services.watchlist.components import registry
from services.watchlist.settings import WatchlistSettings
from shared.components import create_component_app
from shared.observability import configure_logging

__all__ = ["create_app"]


def create_app(settings: WatchlistSettings | None = None, **overrides: Any) -> FastAPI:
    """The ASGI app; without ``settings`` they come from the environment (a real process)."""
    if settings is None:
        settings = WatchlistSettings()
        configure_logging("watchlist", settings.log_level, settings.log_format)
    return create_component_app("watchlist", registry, settings, **overrides)
