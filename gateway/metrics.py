"""Prometheus metrics of the gateway, on the app's ``CollectorRegistry``.

What every frame and every ui message counts (frames, parts, latency) is counted plainly,
on the event loop's thread, and read at scrape time: prometheus_client's ``inc`` and
``observe`` take a lock and, for a histogram, walk the buckets in Python (~8 µs per
frame, several percent of the gateway's CPU at a thousand sockets).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

from gateway.buffer import COUNTS

__all__ = ["GatewayMetrics", "PlainCounter", "PlainHistogram"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class PlainCounter:
    """A counter for one thread: ``inc`` is an addition."""

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1) -> None:
        self.value += amount


class PlainHistogram:
    """A histogram for one thread: ``observe`` is a bisection and two additions."""

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last: above every bound
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le: the first bound ≥ value
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative ``(le, count)`` pairs, ``+Inf`` last, as the exposition wants."""
        cumulative, total = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            total += count
            cumulative.append((bound, float(total)))
        return cumulative


class _HotPathCollector:
    """The plain counters and histograms, read at scrape time."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        yield CounterMetricFamily(
            "gateway_parts_received", "Parts taken into sockets' buffers.", COUNTS.received
        )
        yield CounterMetricFamily(
            "gateway_parts_coalesced",
            "Pending parts replaced by a newer version before they were sent.",
            COUNTS.coalesced,
        )
        yield CounterMetricFamily(
            "gateway_ws_frames", "Text frames sent to browsers.", m.frames.value
        )
        yield CounterMetricFamily("gateway_ws_parts", "Parts sent to browsers.", m.parts.value)
        latency = HistogramMetricFamily(
            "gateway_ui_latency_seconds",
            "Now minus a ui message's ts: when it reached the gateway (received) and when the "
            "frame carrying it was written to the socket (sent; the oldest part of the frame).",
            labels=["stage"],
        )
        for stage, histogram in (("received", m.latency_received), ("sent", m.latency_sent)):
            latency.add_metric([stage], histogram.buckets(), histogram.sum)
        yield latency


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        r = self.registry = registry if registry is not None else CollectorRegistry()
        self.latency_received = PlainHistogram(_LATENCY_BUCKETS)
        self.latency_sent = PlainHistogram(_LATENCY_BUCKETS)
        self.frames = PlainCounter()
        self.parts = PlainCounter()
        r.register(_HotPathCollector(self))
        self.sockets = Gauge("gateway_ws_sockets", "Open browser WebSockets.", registry=r)
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
        self.announce_queued = Gauge(
            "gateway_announce_queued",
            "Sockets waiting for their turn to be announced to the services.",
            registry=r,
        )
        self.announce_outstanding = Gauge(
            "gateway_announce_outstanding",
            "Sockets announced and waiting for their full renders (at most the window).",
            registry=r,
        )
        self.announce_timeouts = Counter(
            "gateway_announce_timeouts",
            "Announced sockets whose full renders did not all come within the timeout.",
            registry=r,
        )
        self.pace_ask = Gauge(
            "gateway_pace_ask_seconds",
            "Interval this gateway asks the services to update pages at (0: every tick).",
            registry=r,
        )
        self.loop_lag = Gauge(
            "gateway_event_loop_lag_seconds", "Smoothed lateness of the event loop.", registry=r
        )
        self.tick_age = Gauge(
            "gateway_tick_age_seconds",
            "Smoothed age of a tick when a component's last message of it is read.",
            registry=r,
        )
        self.read_delay = Gauge(
            "gateway_read_delay_seconds",
            "Smoothed time from a service sending a tick's last message to its reading here.",
            registry=r,
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
