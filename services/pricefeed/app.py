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
from shared.bus import MessageBus, NatsBus
from shared.leases import LeaseStore, NatsLeaseStore
from shared.process import Connections, Part, create_process_app

__all__ = ["SERVICE", "PricefeedPart", "create_app"]

SERVICE = "pricefeed"


class PricefeedPart(Part):
    """The feed: loads the snapshot, runs the market data loop and the risk monitor, and
    competes for the leader lease (one leader ticks, the others stand by)."""

    def __init__(self, settings: PricefeedSettings, provider: QuoteProvider | None) -> None:
        self.settings, self.provider = settings, provider
        self.feed: Pricefeed | None = None

    async def start(self, app: FastAPI) -> None:
        self.feed = await Pricefeed.load(
            self.settings,
            bus=app.state.bus,
            sessions=app.state.db,
            metrics=app.state.pricefeed_metrics,
            provider=self.provider,
            leases=await lease_store(app.state.bus, self.settings),
        )
        app.state.pricefeed = self.feed
        await self.feed.start()

    async def stop(self, app: FastAPI) -> None:
        if self.feed is not None:
            await self.feed.stop()

    async def release(self, app: FastAPI) -> None:
        if self.feed is not None:
            await self.feed.release()


def create_app(
    settings: PricefeedSettings | None = None,
    *,
    connections: Connections | None = None,
    provider: QuoteProvider | None = None,
) -> FastAPI:
    """The ASGI app; ``settings`` default to the environment. ``provider`` replaces the
    configured quote provider (tests)."""
    settings = settings or PricefeedSettings()
    part = PricefeedPart(settings, provider)
    app = create_process_app(SERVICE, settings, [part], connections=connections)
    app.state.pricefeed_metrics = PricefeedMetrics(app.state.metrics)
    app.state.pricefeed = None
    return app


async def lease_store(bus: MessageBus, settings: PricefeedSettings) -> LeaseStore | None:
    """The pricefeed's lease bucket (TTL ``PRICEFEED_LEASE_TTL_S``); ``None`` on an
    in-memory bus, where the one process leads."""
    if not isinstance(bus, NatsBus):
        return None
    return await NatsLeaseStore.open(bus.client, wire.lease_bucket(SERVICE), settings.lease_ttl_s)
