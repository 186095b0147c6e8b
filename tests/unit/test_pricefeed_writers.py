"""The background writers keep what a failed write held, and alerts go out regardless."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from services.pricefeed import writers
from services.pricefeed.domain import Quote
from services.pricefeed.metrics import PricefeedMetrics
from services.pricefeed.monitor import Breach, RiskMonitor
from shared import wire
from shared.bus import InMemoryBus
from tests.support import StubSessions

D = Decimal


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[dict[int, Any]]]:
    calls: dict[str, list[dict[int, Any]]] = {"prices": [], "margins": [], "alerts": []}

    async def write_prices(session: object, quotes: dict[int, Quote]) -> int:
        calls["prices"].append(dict(quotes))
        return 1

    async def write_margins(session: object, used: dict[int, Decimal]) -> int:
        calls["margins"].append(dict(used))
        return 1

    async def insert_alert(session: object, breach: Breach, ts_ms: float | None = None) -> None:
        calls["alerts"].append({breach.account_id: breach.level})

    monkeypatch.setattr(writers, "write_prices", write_prices)
    monkeypatch.setattr(writers, "write_margins", write_margins)
    monkeypatch.setattr(writers, "insert_alert", insert_alert)
    return calls


async def test_a_failed_batch_is_retried_with_newer_values_winning(written) -> None:
    monitor = RiskMonitor({"AAA": D(10)}, {"AAA": D("0.5")})
    monitor.load_account(1, D(1000), {"AAA": 10})
    sessions = StubSessions()
    batch = writers.BatchWriter(sessions, monitor, PricefeedMetrics())  # type: ignore[arg-type]
    old, new, other = Quote(D(1), D(1), D(1)), Quote(D(2), D(2), D(2)), Quote(D(3), D(3), D(3))
    batch.add_prices({1: old, 2: other})
    sessions.down = True
    await batch.flush()
    assert written["prices"] == [] and batch.pending == 3
    batch.add_prices({1: new})
    monitor.on_prices({"AAA": D(12)})
    sessions.down = False
    await batch.flush()
    assert written["prices"] == [{1: new, 2: other}]
    assert written["margins"] == [{1: D(60)}]
    await batch.flush()
    assert batch.pending == 0 and len(written["prices"]) == 1


async def test_alerts_are_stored_then_published_even_if_storing_fails(written) -> None:
    sessions, bus = StubSessions(), InMemoryBus()
    alerts = writers.AlertWriter(sessions, bus, PricefeedMetrics())  # type: ignore[arg-type]
    alerts.submit(Breach(4, "warn", D("80.50"), "w"), 1.0)
    await alerts.drain()
    assert written["alerts"] == [{4: "warn"}]
    sessions.down = True
    alerts.submit(Breach(5, "critical", D("96.00"), "c"), 2.0)
    await alerts.drain()
    assert written["alerts"] == [{4: "warn"}]
    assert [s for s, _ in bus.published] == [wire.risk_breach(4), wire.risk_breach(5)]
    assert bus.published[1][1] == {
        "level": "critical",
        "text": "c",
        "ts": 2.0,
        "utilisation_pct": "96.00",
    }


async def test_margins_are_written_at_most_once_per_interval_and_all_on_handover(written) -> None:
    monitor = RiskMonitor({"AAA": D(10)}, {"AAA": D("0.5")})
    monitor.load_account(1, D(1000), {"AAA": 10})
    now = [100.0]
    batch = writers.BatchWriter(
        StubSessions(),  # type: ignore[arg-type]
        monitor,
        PricefeedMetrics(),
        margin_interval_s=10,
        clock=lambda: now[0],
    )
    await batch.flush()  # the first flush writes margins
    assert written["margins"] == [{1: D(50)}]
    monitor.on_prices({"AAA": D(12)})
    now[0] += 1
    batch.add_prices({1: Quote(D(12), D(12), D(12))})
    await batch.flush()  # prices every flush, margins not yet due
    assert len(written["prices"]) == 1 and len(written["margins"]) == 1
    now[0] += 9
    await batch.flush()  # due: the newest margin
    assert written["margins"][-1] == {1: D(60)}
    monitor.on_prices({"AAA": D(14)})
    now[0] += 1
    await batch.flush(everything=True)  # handing leadership over: nothing is left unwritten
    assert written["margins"][-1] == {1: D(70)}
