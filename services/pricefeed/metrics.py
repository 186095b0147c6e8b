"""The pricefeed's Prometheus metrics, on a registry per app (so tests can build many)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["PricefeedMetrics"]

_CYCLE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_SYMBOL_BUCKETS = (0, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000)


class PricefeedMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.cycle_seconds = Histogram(
            "pricefeed_cycle_seconds",
            "Time one market data cycle took",
            buckets=_CYCLE_BUCKETS,
            registry=r,
        )
        self.symbols_per_tick = Histogram(
            "pricefeed_symbols_per_tick",
            "Changed symbols in one tick",
            buckets=_SYMBOL_BUCKETS,
            registry=r,
        )
        self.ticks = Counter("pricefeed_ticks", "Ticks published", registry=r)
        self.publish_failures = Counter(
            "pricefeed_tick_publish_failures", "Ticks that could not be published", registry=r
        )
        self.slow_cycles = Counter(
            "pricefeed_slow_cycles", "Cycles that overran the tick interval", registry=r
        )
        self.missed_ticks = Counter(
            "pricefeed_missed_ticks", "Tick slots skipped after a slow cycle", registry=r
        )
        self.breaches = Counter("pricefeed_breaches", "Risk breaches raised", ["level"], registry=r)
        self.provider_failures = Counter(
            "pricefeed_provider_failures", "Provider calls that failed", ["provider"], registry=r
        )
        self.stale = Gauge(
            "pricefeed_prices_stale", "1 while the last prices are stale", registry=r
        )
        self.db_writes = Counter(
            "pricefeed_db_write_statements", "Batched UPDATE statements run", ["table"], registry=r
        )
        self.db_write_failures = Counter(
            "pricefeed_db_write_failures", "Batched writes that failed (retried)", registry=r
        )
        self.leader = Gauge(
            "pricefeed_leader", "1 while this replica leads (ticks, alerts, writes)", registry=r
        )
        self.takeovers = Counter(
            "pricefeed_takeovers", "Times this replica became the leader", registry=r
        )
        self.followed_ticks = Counter(
            "pricefeed_followed_ticks", "Leader ticks applied while standby", registry=r
        )
        self.fenced_writes = Counter(
            "pricefeed_fenced_writes",
            "Writes refused because a newer leader had written (stale epoch)",
            ["kind"],
            registry=r,
        )
