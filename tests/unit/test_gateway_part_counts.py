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


def test_frames_parts_and_latency_are_counted_plainly_and_exported_as_prometheus_would() -> None:
    metrics = GatewayMetrics()
    metrics.frames.inc(2)
    metrics.parts.inc(7)
    for seconds in (0.005, 0.0051, 0.3, 11.0):  # a bound is inclusive (le)
        metrics.latency_sent.observe(seconds)
    metrics.latency_received.observe(0.02)
    text = generate_latest(metrics.registry).decode()
    assert "gateway_ws_frames_total 2.0" in text and "gateway_ws_parts_total 7.0" in text
    sent = {
        line.split('le="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gateway_ui_latency_seconds_bucket") and 'stage="sent"' in line
    }
    assert sent["0.005"] == 1 and sent["0.01"] == 2 and sent["0.25"] == 2
    assert sent["0.5"] == 3 and sent["10.0"] == 3 and sent["+Inf"] == 4
    assert 'gateway_ui_latency_seconds_count{stage="sent"} 4.0' in text
    assert 'gateway_ui_latency_seconds_sum{stage="sent"} 11.3101' in text
    assert 'gateway_ui_latency_seconds_bucket{le="0.025",stage="received"} 1.0' in text
