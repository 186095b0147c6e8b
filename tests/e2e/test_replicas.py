"""``REPLICAS=2 make run`` in a real browser: a trader's page stays live while one replica
of every process is SIGKILLed in turn, and its numbers are exact afterwards.

This stack has its own nats-server (the launcher starts it): its services' leases must not
meet those of the session's single-replica stack.
"""

from __future__ import annotations

import os
import re
import signal
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from shared import devservers, wire
from shared.leases import rendezvous_owner
from tests.conftest import TEST_PASSWORD
from tests.e2e.conftest import Stack, launch, login, shut_down
from tests.e2e.test_live_dashboard import assert_arithmetic, snapshot
from tests.support import identity_of

pytestmark = pytest.mark.e2e

LIVE_AGAIN_S = 25.0  # takeover (lease TTL 3 s here) plus a mount, with room for a busy CI
REPLICA_LINE = re.compile(r"2 (\w+) replicas on :(\d+), :(\d+) behind")
COMPONENT_SERVICES = ("portfolio", "watchlist", "risk", "orders")


@pytest.fixture(scope="module")
def replica_stack(pg_server_uri: str, db_templates: dict[str, str], tmp_path_factory: Any
                  ) -> Iterator[Stack]:  # fmt: skip
    name = f"e2e_replicas_{os.getpid()}"
    url = devservers.run_async(devservers.create_database(pg_server_uri, name))
    env = {k: v for k, v in os.environ.items() if k != "NATS_URL"}
    env.update(
        DATABASE_URL=url,
        DEMO_PASSWORD=TEST_PASSWORD,
        REPLICAS="2",
        LEASE_TTL_S="3",
        NATS_PORT=str(devservers.free_port()),
    )
    running = launch(env, tmp_path_factory.mktemp("replicas"), timeout=180)
    yield running
    shut_down(running)
    devservers.run_async(devservers.drop_database(pg_server_uri, name))


def replica_ports(stack: Stack) -> dict[str, list[int]]:
    found: dict[str, list[int]] = {}
    for line in stack.lines:
        if match := REPLICA_LINE.search(line):
            found[match.group(1)] = [int(match.group(2)), int(match.group(3))]
    return found


def kill_listener(port: int) -> None:
    """SIGKILL the process serving ``port`` (the launcher restarts it later)."""
    for conn in psutil.net_connections("tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            assert conn.pid is not None
            os.kill(conn.pid, signal.SIGKILL)
            return
    raise AssertionError(f"nothing listens on :{port}")


def still_moving(page: Any, key: str) -> dict[str, Any]:
    """Wait until the page's ``rows`` (portfolio) or ``watch`` prices change again."""
    before = {r["id"]: r["last"] for r in snapshot(page)[key]}
    deadline = LIVE_AGAIN_S * 1000
    page.wait_for_function(
        """([key, before]) => {
          const cls = key === 'rows' ? '#portfolio-root [id^="portfolio-row-"]'
                                     : '#watchlist-root [id^="watchlist-row-"]';
          return [...document.querySelectorAll(cls)].some(r => {
            const last = r.querySelector('.last-price')?.textContent.trim();
            return before[r.id] !== undefined && last && last !== before[r.id];
          });
        }""",
        arg=[key, before],
        timeout=deadline,
    )
    return snapshot(page)


def test_the_page_stays_live_while_a_replica_of_each_process_is_killed(
    browser: Any, replica_stack: Stack
) -> None:
    ports = replica_ports(replica_stack)
    assert set(ports) == {"gateway", "pricefeed", *COMPONENT_SERVICES}, ports
    alice = devservers.run_async(identity_of(replica_stack.env["DATABASE_URL"], "alice"))
    context = browser.new_context(base_url=replica_stack.base_url)
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        login(page, "alice")
        page.wait_for_selector("#portfolio-root #portfolio-row-AAPL")
        page.evaluate("() => { window.__same_page = true; }")
        assert_arithmetic(still_moving(page, "rows"))

        for service in COMPONENT_SERVICES:  # the replica that owns alice
            names = [f"{service}-1", f"{service}-2"]
            owner = rendezvous_owner(wire.partition_of(alice.user_id), names)
            kill_listener(ports[service][names.index(owner or "")])
            assert_arithmetic(still_moving(page, "rows"))
            still_moving(page, "watch")
        for i in (0, 1):  # whichever leads, the feed fails over; then the other gateway
            kill_listener(ports["pricefeed"][i])
            still_moving(page, "watch")
            page.wait_for_timeout(3000)  # the killed one is back as the standby
        for i in (0, 1):  # one of the two holds the page's socket: it reconnects
            kill_listener(ports["gateway"][i])
            still_moving(page, "watch")
            page.wait_for_timeout(1000)

        final = still_moving(page, "rows")
        assert_arithmetic(final)
        assert page.evaluate("() => window.__same_page === true")  # never reloaded
        page.wait_for_selector("#feed-status[data-state=live]")
        # an order still goes through and reaches the (new) portfolio owner
        page.fill("#order-root input[name=symbol]", "KO")
        page.fill("#order-root input[name=quantity]", "3")
        page.click("#order-root button[value=buy]")
        row = page.wait_for_selector("#portfolio-row-KO")
        assert row.query_selector(".qty").text_content().strip() == "3"
        assert_arithmetic(snapshot(page))
    finally:
        context.close()
