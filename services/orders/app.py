"""The orders service."""

from __future__ import annotations

from fastapi import FastAPI

from services.orders.settings import OrdersSettings
from shared.app_base import create_base_app

__all__ = ["create_app"]


def create_app(settings: OrdersSettings | None = None) -> FastAPI:
    return create_base_app("orders", settings or OrdersSettings())
