"""The risk service: RiskMetricsComponent over HTTP and live over NATS."""

from __future__ import annotations

from fastapi import FastAPI

from services.risk.components import registry
from services.risk.settings import RiskSettings
from shared.components import create_component_app
from shared.process import Connections

__all__ = ["create_app"]


def create_app(
    settings: RiskSettings | None = None, *, connections: Connections | None = None
) -> FastAPI:
    """The ASGI app; without ``settings`` they come from the environment (a real process)."""
    settings = settings or RiskSettings()
    return create_component_app("risk", registry, settings, connections=connections)
