"""Prometheus metrics of the gateway, on the app's ``CollectorRegistry``."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, Metric

from gateway.buffer import COUNTS

__all__ = ["GatewayMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class _PartCountsCollector:
    """The sockets' buffers count plainly on the hot path; read at scrape time."""

    def collect(self) -> Iterator[Metric]:
        yield CounterMetricFamily(
            "gateway_parts_received", "Parts taken into sockets' buffers.", COUNTS.received
        )
        yield CounterMetricFamily(
            "gateway_parts_coalesced",
            "Pending parts replaced by a newer version before they were sent.",
            COUNTS.coalesced,
        )


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        r.register(_PartCountsCollector())
        self.ui_latency = Histogram(
            "gateway_ui_latency_seconds",
            "Now minus a ui message's ts: when it reached the gateway (received) and when the "
            "frame carrying it was written to the socket (sent; the oldest part of the frame).",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # the two hot-path children, looked up once (labels() takes a lock and a dict lookup)
        self.latency_received = self.ui_latency.labels("received")
        self.latency_sent = self.ui_latency.labels("sent")
        self.sockets = Gauge("gateway_ws_sockets", "Open browser WebSockets.", registry=r)
        self.frames = Counter("gateway_ws_frames", "Text frames sent to browsers.", registry=r)
        self.parts = Counter("gateway_ws_parts", "Parts sent to browsers.", registry=r)
        self.closed = Counter(
            "gateway_ws_closed", "Sockets the gateway closed, by reason.", ["reason"], registry=r
        )
        self.refused = Counter(
            "gateway_ws_refused", "Handshakes refused, by reason.", ["reason"], registry=r
        )
        self.frame_interval = Gauge(
            "gateway_ws_frame_interval_seconds",
            "Least time between two frames to one socket (longer while the loop runs late).",
            registry=r,
        )
        self.loop_lag = Gauge(
            "gateway_event_loop_lag_seconds", "Smoothed lateness of the event loop.", registry=r
        )
        self.overflows = Counter(
            "gateway_ws_buffer_overflows", "Per-socket buffers that overflowed.", registry=r
        )
        self.fenced = Counter(
            "gateway_ui_fenced",
            "ui.* messages (or shared topics) dropped: published under an older epoch.",
            registry=r,
        )
        self.parts_dropped = Counter(
            "gateway_parts_dropped",
            "Parts a service sent that the gateway refused to forward, by reason.",
            ["reason"],
            registry=r,
        )
        self.gaps = Counter(
            "gateway_ui_seq_gaps", "Sequence gaps in a producer's ui.* messages.", registry=r
        )
        self.resyncs = Counter(
            "gateway_resync_sessions",
            "Sockets re-announced for full renders (takeover, gap).",
            registry=r,
        )
        self.logins = Counter(
            "gateway_logins", "Login attempts by outcome.", ["outcome"], registry=r
        )
        self.fragments = Counter(
            "gateway_fragments",
            "Fragment fetches by component and outcome.",
            ["component", "outcome"],
            registry=r,
        )
        self.fragment_seconds = Histogram(
            "gateway_fragment_seconds", "Fragment fetch latency.", ["component"], registry=r
        )
        self.events = Counter(
            "gateway_events",
            "Proxied component events by component and status.",
            ["component", "status"],
            registry=r,
        )
