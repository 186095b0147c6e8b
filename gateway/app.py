"""The gateway: login, the composed page, the event proxy and the browser WebSocket."""

from __future__ import annotations

from fastapi import FastAPI

from gateway.settings import GatewaySettings
from shared.app_base import create_base_app

__all__ = ["create_app"]


def create_app(settings: GatewaySettings | None = None) -> FastAPI:
    return create_base_app("gateway", settings or GatewaySettings())
