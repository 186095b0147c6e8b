"""Prometheus metrics of a component service, on a per-app ``CollectorRegistry``."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from shared.observability import process_registry

__all__ = ["ComponentMetrics"]


class ComponentMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else process_registry()
        self.requests = Counter(
            "component_requests",
            "Component HTTP requests by component, event and status.",
            ["component", "event", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "component_request_seconds",
            "Component HTTP request latency.",
            ["component", "kind"],
            registry=self.registry,
        )
        self.publishes = Counter(
            "component_live_publishes",
            "ui.* messages published, full renders or parts.",
            ["component", "full"],
            registry=self.registry,
        )
        self.parts = Counter(
            "component_live_parts", "Parts published.", ["component"], registry=self.registry
        )
        self.sessions = Gauge(
            "component_live_sessions", "Live sessions known.", registry=self.registry
        )
        self.instances = Gauge(
            "component_live_instances", "Live component instances.", registry=self.registry
        )
        self.partitions = Gauge(
            "component_live_partitions",
            "Live partitions this replica owns (their users' one producer).",
            registry=self.registry,
        )
        self.takeovers = Counter(
            "component_live_partitions_gained",
            "Live partitions taken over (start, a replica joined or died).",
            registry=self.registry,
        )

        self.ticks_merged = Counter(
            "component_live_ticks_merged",
            "Ticks merged into a later one because the service was busy (skip to newest).",
            registry=self.registry,
        )
        self.pace = Gauge(
            "component_live_pace_seconds",
            "Least time between two live passes, as the slowest gateway asks (gateway.pace; "
            "0: every tick).",
            registry=self.registry,
        )
        self.tick_seconds = Histogram(
            "component_live_tick_seconds",
            "Time to bring every live instance up to one (merged) tick and publish.",
            registry=self.registry,
        )
        self.tick_gaps = Counter(
            "component_tick_seq_gaps",
            "prices.ticks whose seq did not follow the previous one: skipped (ticks were "
            "lost, or a cold pricefeed leader took over) or backwards (repeated, reordered).",
            ["kind"],
            registry=self.registry,
        )
        self.mounts_skipped = Counter(
            "component_live_mounts_skipped",
            "Queued session mounts skipped because the session closed first.",
            registry=self.registry,
        )

    def published_many(self, component: str, counts: dict[bool, int], parts: int) -> None:
        """Count a batch: ``counts`` maps full → updates published."""
        for full, count in counts.items():
            if count:
                self.publishes.labels(component, "true" if full else "false").inc(count)
        if parts:
            self.parts.labels(component).inc(parts)

    def follow_live(
        self,
        sessions: Callable[[], int],
        instances: Callable[[], int],
        partitions: Callable[[], int],
    ) -> None:
        """Read the live counts when scraped (a mount no longer sets three gauges, one
        of which looked at every partition's lease)."""
        self.sessions.set_function(sessions)
        self.instances.set_function(instances)
        self.partitions.set_function(partitions)
