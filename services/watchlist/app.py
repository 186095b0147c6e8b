"""The watchlist service."""

from __future__ import annotations

from fastapi import FastAPI

from services.watchlist.settings import WatchlistSettings
from shared.app_base import create_base_app

__all__ = ["create_app"]


def create_app(settings: WatchlistSettings | None = None) -> FastAPI:
    return create_base_app("watchlist", settings or WatchlistSettings())
