"""The portfolio service: PortfolioComponent over HTTP and live over NATS."""

from __future__ import annotations

from fastapi import FastAPI

from services.portfolio.components import registry
from services.portfolio.settings import PortfolioSettings
from shared.components import create_component_app
from shared.process import Connections

__all__ = ["create_app"]


def create_app(
    settings: PortfolioSettings | None = None, *, connections: Connections | None = None
) -> FastAPI:
    """The ASGI app; without ``settings`` they come from the environment (a real process)."""
    settings = settings or PortfolioSettings()
    return create_component_app("portfolio", registry, settings, connections=connections)
