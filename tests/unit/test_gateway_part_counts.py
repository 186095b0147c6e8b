"""The gateway counts the parts its sockets took in and those a newer one replaced."""

from __future__ import annotations

from prometheus_client import generate_latest

from gateway.buffer import COUNTS, PartBuffer
from gateway.metrics import GatewayMetrics


def _part(pid: str, text: str) -> tuple[str, str]:
    return pid, f'<div hx-swap-oob="true" id="{pid}">{text}</div>'


def test_received_and_coalesced_parts_are_exported() -> None:
    metrics = GatewayMetrics()
    received, coalesced = COUNTS.received, COUNTS.coalesced
    buffer = PartBuffer()
    buffer.put_prepared(
        "portfolio", [_part("portfolio-pl-A", "1"), _part("portfolio-totals", "1")], None
    )
    buffer.put_prepared("portfolio", [_part("portfolio-pl-A", "2")], None)  # newer: replaces
    buffer.put_prepared("portfolio", [_part("portfolio-root", "all")], None, full=True)
    assert (COUNTS.received - received, COUNTS.coalesced - coalesced) == (4, 3)
    assert len(buffer.drain().frames) == 1
    text = generate_latest(metrics.registry).decode()
    assert f"gateway_parts_received_total {float(COUNTS.received)}" in text
    assert f"gateway_parts_coalesced_total {float(COUNTS.coalesced)}" in text
