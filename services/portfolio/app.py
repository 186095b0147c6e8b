"""The portfolio service: PortfolioComponent over HTTP and live over NATS."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from services.portfolio.components import registry
from services.portfolio.settings import PortfolioSettings
from shared.components import create_component_app
from shared.observability import configure_logging

__all__ = ["create_app"]


def create_app(settings: PortfolioSettings | None = None, **overrides: Any) -> FastAPI:
    """The ASGI app; without ``settings`` they come from the environment (a real process)."""
    if settings is None:
        settings = PortfolioSettings()
        configure_logging("portfolio", settings.log_level, settings.log_format)
    return create_component_app("portfolio", registry, settings, **overrides)
