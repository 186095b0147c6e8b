"""`<PREFIX>_DB_POOL_SIZE` sizes the connection pool of every process, each its own."""

from __future__ import annotations

import importlib

import pytest

from shared.launcher import SERVICES, ServiceSpec
from tests.support import running

pytestmark = pytest.mark.service


@pytest.mark.parametrize("spec", SERVICES, ids=[s.name for s in SERVICES])
async def test_the_pool_size_setting_sizes_the_running_pool(
    monkeypatch: pytest.MonkeyPatch, service_env: None, spec: ServiceSpec
) -> None:
    prefix = spec.port_env.removesuffix("PORT")
    monkeypatch.setenv(f"{prefix}DB_POOL_SIZE", "3")
    module, factory = spec.factory.split(":")
    app = getattr(importlib.import_module(module), factory)()  # settings from the environment
    async with running(app) as client:
        assert (await client.get("/healthz")).status_code == 200
        pool = app.state.engine.pool
        assert pool.size() == 3, f"{spec.name} ignores {prefix}DB_POOL_SIZE"
        assert pool._max_overflow == 3  # up to 2 × the size (deploy/README.md, "Scaling")
