"""The pricefeed process: ``uvicorn services.pricefeed.app:create_app --factory``.

Nothing connects at import or in :func:`create_app`; the lifespan connects PostgreSQL and
NATS, loads the snapshot and starts the market data loop and the risk monitor.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.pricefeed.metrics import PricefeedMetrics
from services.pricefeed.providers import QuoteProvider
from services.pricefeed.service import Pricefeed
from services.pricefeed.settings import PricefeedSettings
from shared.app_base import create_base_app
from shared.bus import MessageBus

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
        )
        app.state.pricefeed = feed
        await feed.start()

    async def on_stop(app: FastAPI) -> None:
        feed: Pricefeed | None = getattr(app.state, "pricefeed", None)
        if feed is not None:
            await feed.stop()

    app = create_base_app(SERVICE, settings, on_start=on_start, on_stop=on_stop, bus=bus)
    app.state.pricefeed_metrics = PricefeedMetrics(app.state.metrics)
    return app
