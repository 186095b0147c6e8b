"""The orders service: OrderComponent over HTTP, live order lists, the simulated venue."""

from __future__ import annotations

import contextlib

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from services.orders.components import registry
from services.orders.settings import OrdersDeps, OrdersSettings
from services.orders.venue import Venue
from shared import wire
from shared.bus import MessageBus, Subscription
from shared.components import ComponentOptions, create_component_app
from shared.outbox import OutboxRelay
from shared.process import Connections, Part

__all__ = ["OrderFlow", "create_app"]


class OrderFlow(Part):
    """The orders service's background work: the outbox relay publishes the order events
    its transactions staged; the venue matches ticks against resting orders, only on the
    replica holding its lease (every replica without NATS)."""

    def __init__(self, settings: OrdersSettings) -> None:
        self.settings = settings
        self.relay = OutboxRelay(self._db, self._bus)
        self.venue = Venue(self._db, self.relay.wake)
        self._app: FastAPI | None = None
        self._ticks: Subscription | None = None

    def _db(self) -> async_sessionmaker[AsyncSession] | None:
        return self._app.state.db if self._app is not None else None

    def _bus(self) -> MessageBus | None:
        return self._app.state.bus if self._app is not None else None

    async def start(self, app: FastAPI) -> None:
        self._app = app
        self.relay.start()
        self._ticks = await app.state.bus.subscribe(wire.PRICES_TICKS, self.venue.on_tick)
        if app.state.lease_store is not None:
            replica = self.settings.replica_id or None
            lease = await self.venue.hold_lease(app.state.lease_store, replica)
            app.state.leases.append(lease)  # released on shutdown and by /ops/release

    async def stop(self, app: FastAPI) -> None:
        if self._ticks is not None:
            with contextlib.suppress(Exception):
                await self._ticks.unsubscribe()
        await self.venue.stop()
        await self.relay.stop()


def create_app(
    settings: OrdersSettings | None = None, *, connections: Connections | None = None
) -> FastAPI:
    """The ASGI app; without ``settings`` they come from the environment (a real process)."""
    settings = settings or OrdersSettings()
    flow = OrderFlow(settings)
    options = ComponentOptions(
        price_book=True, deps=OrdersDeps.of(settings, flow.relay, flow.venue.recheck)
    )
    app = create_component_app(
        "orders", registry, settings, parts=[flow], connections=connections, options=options
    )
    app.state.outbox, app.state.venue = flow.relay, flow.venue
    return app
