"""The orders service: OrderComponent over HTTP, live order lists, the simulated venue."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from services.orders.components import registry
from services.orders.settings import OrdersSettings
from services.orders.venue import Venue
from shared import wire
from shared.components import create_component_app
from shared.observability import configure_logging
from shared.outbox import OutboxRelay

__all__ = ["create_app"]


def create_app(settings: OrdersSettings | None = None, **overrides: Any) -> FastAPI:
    """The ASGI app; without ``settings`` they come from the environment (a real process).

    The venue subscribes ``prices.ticks`` through the app's bus once its lifespan starts
    and matches only on the replica holding its lease (every replica without NATS); the
    outbox relay publishes the order events its transactions staged.
    """
    if settings is None:
        settings = OrdersSettings()
        configure_logging("orders", settings.log_level, settings.log_format)
    app: FastAPI | None = None
    relay = OutboxRelay(
        lambda: app.state.db if app else None, lambda: app.state.bus if app else None
    )
    venue = Venue(lambda: app.state.db if app else None, relay.wake)
    handlers = {wire.PRICES_TICKS: venue.on_tick, **overrides.pop("handlers", {})}
    extras = {
        "max_feed_silence_s": settings.max_feed_silence_s,
        "confirm_share": settings.confirm_share,
        "outbox": relay,
        **overrides.pop("extras", {}),
    }

    async def start(service: FastAPI) -> None:
        relay.start()
        if service.state.lease_store is not None:
            lease = await venue.hold_lease(service.state.lease_store, settings.replica_id or None)
            service.state.leases.append(lease)  # released on shutdown and by /ops/release

    async def stop(_app: FastAPI) -> None:
        await venue.stop()
        await relay.stop()

    app = create_component_app(
        "orders",
        registry,
        settings,
        handlers=handlers,
        extras=extras,
        price_book=True,
        on_start=start,
        on_stop=stop,
        **overrides,
    )
    app.state.outbox = relay
    app.state.venue = venue
    return app
