"""The risk service: RiskMetricsComponent over HTTP and live over NATS."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from services.risk.components import registry
from services.risk.settings import RiskSettings
from shared.components import create_component_app
from shared.observability import configure_logging

__all__ = ["create_app"]


def create_app(settings: RiskSettings | None = None, **overrides: Any) -> FastAPI:
    """The ASGI app; without ``settings`` they come from the environment (a real process)."""
    if settings is None:
        settings = RiskSettings()
        configure_logging("risk", settings.log_level, settings.log_format)
    return create_component_app("risk", registry, settings, **overrides)
