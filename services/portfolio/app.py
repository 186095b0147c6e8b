"""The portfolio service."""

from __future__ import annotations

from fastapi import FastAPI

from services.portfolio.settings import PortfolioSettings
from shared.app_base import create_base_app

__all__ = ["create_app"]


def create_app(settings: PortfolioSettings | None = None) -> FastAPI:
    return create_base_app("portfolio", settings or PortfolioSettings())
