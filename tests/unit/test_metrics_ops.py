"""The operators' series that need no server: HTTP answers, tick sequence gaps, the orders
latency histograms, and what an app's ``/metrics`` reads from its runtime parts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse
from prometheus_client import CollectorRegistry

from services.orders.venue import OrderMetrics, Venue
from shared import wire
from shared.bus import InMemoryBus, NatsBus
from shared.components import ComponentOptions, InMemoryRateLimiter, create_component_app
from shared.components.testing import trader
from shared.db.engine import MeteredPool, create_engine
from shared.observability import install_ops_routes, process_registry, when_answered
from shared.process import Connections
from tests.example_service.components import registry
from tests.example_service.fakes import FakeClock, settings, token


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


# -- HTTP answers (every process) ----------------------------------------------------------------


@pytest.fixture
def plain() -> tuple[FastAPI, CollectorRegistry, list[tuple[float, int]]]:
    """A bare app with the ops routes: the framework's HTTP series, nothing else."""
    app = FastAPI()
    metrics = process_registry()
    heard: list[tuple[float, int]] = []

    @app.get("/answer/{status}")
    async def answer(status: int) -> PlainTextResponse:
        when_answered(lambda seconds, code: heard.append((seconds, code)))
        return PlainTextResponse("x", status_code=status)

    @app.get("/crash")
    async def crash() -> None:
        raise RuntimeError("a bug")

    install_ops_routes(app, service="plain", registry=metrics, ready_checks={})
    return app, metrics, heard


async def test_http_answers_are_counted_by_code_and_timed(
    plain: tuple[FastAPI, CollectorRegistry, list[tuple[float, int]]],
) -> None:
    app, metrics, heard = plain
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://p") as client:
        assert (await client.get("/answer/200")).status_code == 200
        assert (await client.get("/answer/503")).status_code == 503
        assert (await client.get("/crash")).status_code == 500
        for path in ("/metrics", "/healthz", "/readyz"):  # probes and scrapes are not traffic
            assert (await client.get(path)).status_code == 200
    assert value(metrics, "http_requests_total", code="200") == 1
    assert value(metrics, "http_requests_total", code="503") == 1
    assert value(metrics, "http_requests_total", code="500") == 1
    assert value(metrics, "http_request_seconds_count") == 3
    assert [code for _, code in heard] == [200, 503]
    assert all(seconds >= 0 for seconds, _ in heard)


def test_when_answered_outside_a_request_says_so() -> None:
    assert when_answered(lambda seconds, code: None) is False


# -- tick sequence gaps (component services) -----------------------------------------------------


@pytest.fixture
async def example() -> AsyncIterator[tuple[FastAPI, InMemoryBus]]:
    bus = InMemoryBus()
    app = create_component_app(
        "example",
        registry,
        settings(),
        connections=Connections(bus=bus, database=False),
        options=ComponentOptions(limiter=InMemoryRateLimiter(FakeClock())),
    )
    async with app.router.lifespan_context(app):
        yield app, bus


def tick(seq: int) -> dict[str, object]:
    quote = {"last": "100.00", "bid": "99.99", "ask": "100.01", "chg_pct": "0.1"}
    return {"seq": seq, "ts": 1.7e12 + seq, "prices": {"AAPL": quote}}


async def test_tick_sequence_gaps_are_counted(example: tuple[FastAPI, InMemoryBus]) -> None:
    app, bus = example
    metrics = app.state.metrics
    for seq in (10, 11, 12):
        await bus.publish(wire.PRICES_TICKS, tick(seq))
    assert value(metrics, "component_tick_seq_gaps_total", kind="skipped") == 0
    await bus.publish(wire.PRICES_TICKS, tick(15))  # 13 and 14 lost
    await bus.publish(wire.PRICES_TICKS, tick(16))
    # a cold pricefeed leader starts at the tick clock: one large jump
    await bus.publish(wire.PRICES_TICKS, tick(6_800_000_000))
    assert value(metrics, "component_tick_seq_gaps_total", kind="skipped") == 2
    await bus.publish(wire.PRICES_TICKS, tick(6_800_000_000))  # repeated
    await bus.publish(wire.PRICES_TICKS, tick(3))  # backwards
    assert value(metrics, "component_tick_seq_gaps_total", kind="backwards") == 2
    await bus.publish(wire.PRICES_TICKS, {"ts": 1.0, "prices": {}})  # no seq: nothing to say
    await bus.publish(wire.PRICES_TICKS, tick(4))
    assert value(metrics, "component_tick_seq_gaps_total", kind="skipped") == 2


async def test_an_app_scrape_reads_its_runtime_parts(
    example: tuple[FastAPI, InMemoryBus],
) -> None:
    app, _bus = example
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://svc") as client:
        headers = {wire.HEADER_IDENTITY: token(trader())}
        assert (await client.get("/components/portfolio", headers=headers)).status_code == 200
        before = (await client.get("/metrics")).text
        assert "nats_connected" not in before  # an in-memory bus has no connection
        assert 'http_requests_total{code="200"} 1.0' in before
        app.state.bus = NatsBus(None)  # not connected (yet)
        app.state.engine = create_engine("postgresql://u:p@127.0.0.1:9/x", pool_size=3)
        try:
            after = (await client.get("/metrics")).text
        finally:
            await app.state.engine.dispose()
    assert "nats_connected 0.0" in after
    assert "nats_reconnects_total 0.0" in after
    assert "db_pool_in_use 0.0" in after
    assert "db_pool_max_connections 6.0" in after


def test_only_a_queue_pool_is_metered() -> None:
    assert isinstance(create_engine("postgresql://u:p@127.0.0.1:9/x").pool, MeteredPool)
    assert not isinstance(
        create_engine("postgresql://u:p@127.0.0.1:9/x", null_pool=True).pool, MeteredPool
    )


# -- the orders latency histograms ---------------------------------------------------------------


def test_submit_answers_are_timed_by_outcome() -> None:
    metrics = OrderMetrics()
    registry = CollectorRegistry()
    registry.register(metrics)
    metrics.answered(0.04, 200)
    metrics.answered(0.02, 422)
    metrics.answered(0.3, 503)
    name = "orders_submit_ack_seconds_count"
    assert [value(registry, name, outcome=o) for o in ("ok", "refused", "error")] == [1, 1, 1]
    assert value(registry, "orders_submit_ack_seconds_bucket", outcome="ok", le="0.05") == 1
    assert value(registry, "orders_submit_ack_seconds_bucket", outcome="error", le="0.25") == 0


def test_the_venue_exports_resting_time_to_fill() -> None:
    metrics = OrderMetrics()
    venue = Venue(lambda: None, metrics=metrics)
    registry = CollectorRegistry()
    registry.register(venue)
    created = datetime(2026, 1, 5, 14, 0, tzinfo=UTC)
    metrics.filled(created, created + timedelta(seconds=42))
    metrics.filled(created, None)  # not filled: nothing
    assert value(registry, "orders_submit_to_fill_seconds_count") == 1
    assert value(registry, "orders_submit_to_fill_seconds_sum") == 42
    assert value(registry, "orders_submit_to_fill_seconds_bucket", le="30.0") == 0
    assert value(registry, "orders_submit_to_fill_seconds_bucket", le="60.0") == 1
