"""The watchlist service: WatchlistComponent over HTTP and live over NATS."""

from __future__ import annotations

from fastapi import FastAPI

from services.watchlist.components import registry
from services.watchlist.settings import WatchlistSettings
from shared.components import create_component_app
from shared.process import Connections

__all__ = ["create_app"]


def create_app(
    settings: WatchlistSettings | None = None, *, connections: Connections | None = None
) -> FastAPI:
    """The ASGI app; without ``settings`` they come from the environment (a real process)."""
    settings = settings or WatchlistSettings()
    return create_component_app("watchlist", registry, settings, connections=connections)
