"""The pricefeed process: ``uvicorn services.pricefeed.app:create_app --factory``.

Nothing connects at import or in :func:`create_app`; the lifespan connects PostgreSQL and
NATS, loads the snapshot, starts the market data loop and the risk monitor, and competes
for the leader lease (one leader ticks, the others stand by). ``POST /ops/release`` (a
pod's preStop hook) hands the lease to a standby.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.pricefeed.metrics import PricefeedMetrics
from services.pricefeed.providers import QuoteProvider
from services.pricefeed.service import Pricefeed
from services.pricefeed.settings import PricefeedSettings
from shared import wire
from shared.app_base import create_base_app
from shared.bus import MessageBus, NatsBus
from shared.leases import LeaseStore, NatsLeaseStore

__all__ = ["SERVICE", "create_app"]

SERVICE = "pricefeed"


def create_app(
    settings: PricefeedSettings | None = None,
    *,
    provider: QuoteProvider | None = None,
    bus: MessageBus | None = None,
) -> FastAPI:
    """The ASGI app; ``settings`` default to the environment. ``provider`` and ``bus``
    replace the configured quote provider and the NATS connection (tests)."""
    settings = settings or PricefeedSettings()

    async def on_start(app: FastAPI) -> None:
        feed = await Pricefeed.load(
            settings,
            bus=app.state.bus,
            sessions=app.state.sessions,
            metrics=app.state.pricefeed_metrics,
            provider=provider,
            leases=await lease_store(app.state.bus, settings),
        )
        app.state.pricefeed = feed
        await feed.start()

    async def on_stop(app: FastAPI) -> None:
        feed: Pricefeed | None = getattr(app.state, "pricefeed", None)
        if feed is not None:
            await feed.stop()

    async def release(app: FastAPI) -> None:
        feed: Pricefeed | None = getattr(app.state, "pricefeed", None)
        if feed is not None:
            await feed.release()

    app = create_base_app(
        SERVICE, settings, on_start=on_start, on_stop=on_stop, release=release, bus=bus
    )
    app.state.pricefeed_metrics = PricefeedMetrics(app.state.metrics)
    return app


async def lease_store(bus: MessageBus, settings: PricefeedSettings) -> LeaseStore | None:
    """The pricefeed's lease bucket (TTL ``PRICEFEED_LEASE_TTL_S``); ``None`` on an
    in-memory bus, where the one process leads."""
    if not isinstance(bus, NatsBus):
        return None
    return await NatsLeaseStore.open(bus.client, wire.lease_bucket(SERVICE), settings.lease_ttl_s)
