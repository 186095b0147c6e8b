"""The NATS connection's series against a real nats-server: state, disconnects, reconnects
(the server restarted on its port) and slow-consumer drops."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from shared import devservers
from shared.bus import NatsBus
from tests.support import wait_until

pytestmark = pytest.mark.service


def scrape(bus: NatsBus) -> dict[str, float]:
    registry = CollectorRegistry()
    registry.register(bus)
    lines = generate_latest(registry).decode().splitlines()
    return {
        name: float(number)
        for name, number in (line.split(" ") for line in lines if not line.startswith("#"))
    }


async def test_a_server_restart_is_one_disconnect_and_one_reconnect(tmp_path: Path) -> None:
    server = devservers.NatsServer(tmp_path / "nats").start()
    bus = await NatsBus.connect(server.url, name="metrics-test")
    try:
        assert scrape(bus) == {
            "nats_connected": 1.0,
            "nats_disconnects_total": 0.0,
            "nats_reconnects_total": 0.0,
            "nats_errors_total": 0.0,
            "nats_slow_consumer_drops_total": 0.0,
        }
        server.stop()
        await wait_until(lambda: bus.stats.disconnects == 1 and not bus.is_connected)
        assert scrape(bus)["nats_connected"] == 0.0
        server = devservers.NatsServer(tmp_path / "nats", port=server.port).start()
        await wait_until(lambda: bus.stats.reconnects == 1 and bus.is_connected, timeout=10)
        after = scrape(bus)
        assert after["nats_connected"] == 1.0
        assert after["nats_disconnects_total"] == 1.0
        assert after["nats_reconnects_total"] == 1.0
    finally:
        await bus.close()
        server.stop()
    assert bus.stats.disconnects == 1  # closing the connection is not losing it


async def test_slow_consumer_drops_are_counted(nats_url: str) -> None:
    bus = await NatsBus.connect(nats_url, name="metrics-slow")
    release = asyncio.Event()
    received: list[Any] = []

    async def stuck(msg: Any) -> None:
        received.append(msg)
        await release.wait()

    try:
        # a subscriber that holds one message and may queue one more
        sub = await bus.client.subscribe("metrics.slow", cb=stuck, pending_msgs_limit=1)
        for i in range(20):
            await bus.publish("metrics.slow", {"i": i})
        await bus.flush()
        await wait_until(lambda: bus.stats.slow_consumer_drops >= 1 and received)
        release.set()
        await sub.unsubscribe()
        counted = scrape(bus)
        assert counted["nats_slow_consumer_drops_total"] == bus.stats.slow_consumer_drops
        assert 1 <= bus.stats.slow_consumer_drops <= 19
        assert counted["nats_errors_total"] == 0.0  # drops are not counted as errors
    finally:
        release.set()
        await bus.close()
