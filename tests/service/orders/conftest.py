"""Fixtures the orders service tests share: the service's settings (built after
``service_env`` has pointed them at the demo database and the run's nats-server), and one
running orders process with a client of it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from services.orders.settings import OrdersSettings
from tests.service.orders.support import Process, started


@pytest.fixture
def settings(service_env: None) -> OrdersSettings:
    return OrdersSettings()


@pytest.fixture
async def process(settings: OrdersSettings) -> AsyncIterator[Process]:
    async with started(settings) as one:
        yield one


@pytest.fixture
def client(process: Process) -> httpx.AsyncClient:
    return process.client
