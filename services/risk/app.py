"""The risk service."""

from __future__ import annotations

from fastapi import FastAPI

from services.risk.settings import RiskSettings
from shared.app_base import create_base_app

__all__ = ["create_app"]


def create_app(settings: RiskSettings | None = None) -> FastAPI:
    return create_base_app("risk", settings or RiskSettings())
