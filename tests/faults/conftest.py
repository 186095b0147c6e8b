"""The fault suite's stack: the launcher's services on their own nats-server and database,
which the tests kill and restart (the launcher supervises the services it started; the
servers here belong to the tests, so an outage lasts as long as a test wants)."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from shared import devservers
from tests.conftest import TEST_PASSWORD
from tests.e2e.conftest import (  # the hook: a failure leaves its pages and logs
    Stack,
    chromium,
    launch,
    page_factory,
    pytest_runtest_makereport,  # noqa: F401
    shut_down,
)

DIE_AFTER_COMMIT = "die-after-commit-"
AFTER_COMMIT = f"orders.after_commit={DIE_AFTER_COMMIT}"


@dataclass
class FaultStack:
    stack: Stack
    nats: devservers.NatsServer
    pg_data: str
    database_url: str

    @property
    def base_url(self) -> str:
        return self.stack.base_url

    def port(self, service: str) -> int:
        return self.stack.port(service)

    def kill(self, service: str) -> None:
        """SIGKILL a service (the launcher restarts it)."""
        port = str(self.port(service))
        for proc in psutil.Process(self.stack.process.pid).children(recursive=True):
            args = proc.cmdline()
            if any(a == "--port" and b == port for a, b in itertools.pairwise(args)):
                proc.kill()
                return
        raise AssertionError(f"no {service} process on :{port}")

    def stop_nats(self) -> None:
        assert self.nats.process is not None
        self.nats.process.kill()
        self.nats.process.wait()

    def start_nats(self) -> None:
        self.nats.start()


@pytest.fixture(scope="session")
def fault_stack(tmp_path_factory: Any) -> Iterator[FaultStack]:
    """The launcher with its own PostgreSQL (which it supervises) and the test's nats-server."""
    nats = devservers.NatsServer(Path(tmp_path_factory.mktemp("fault-nats"))).start()
    data_dir = Path(tmp_path_factory.mktemp("fault-stack"))
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    # an order whose client order id starts so kills the orders process after its commit
    env.update(NATS_URL=nats.url, DEMO_PASSWORD=TEST_PASSWORD, FAILPOINTS=f"{AFTER_COMMIT}*")
    stack = launch(env, data_dir)
    said = next(line for line in stack.lines if "PostgreSQL running in" in line)
    url = said.rsplit(": ", 1)[1].strip()  # the launcher's own database
    yield FaultStack(stack, nats, str(data_dir / "postgres"), url)
    shut_down(stack)
    nats.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    yield from chromium()


@pytest.fixture
def new_page(browser: Any, fault_stack: FaultStack) -> Iterator[Any]:
    yield from page_factory(browser, fault_stack.base_url, timeout_ms=15_000)
