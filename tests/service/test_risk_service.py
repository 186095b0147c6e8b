"""The risk service against real PostgreSQL and NATS: HTTP fragment, stored alerts, live parts."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from services.risk.app import create_app
from services.risk.components import ALERTS_ID, EXPOSURE_ID, GAUGE_ID
from services.risk.settings import RiskSettings
from shared import wire
from shared.bus import NatsBus
from shared.db.engine import create_engine, session_factory
from shared.db.models import Account, RiskAlert, Symbol
from shared.db.queries import held_positions
from shared.identity import Identity
from tests.support import (
    close_positions,
    collect_ui,
    identity_headers,
    identity_of,
    running,
    session_payload,
    wait_until,
)

pytestmark = pytest.mark.service

_SHOWN = re.compile(r'aria-label="(\d+\.\d)% of margin limit used"')


@pytest.fixture
def settings(service_env: None) -> RiskSettings:
    return RiskSettings()


async def _store_alert(database_url: str, account_id: int, text: str) -> None:
    """What the pricefeed does before it publishes a breach."""
    engine = create_engine(database_url, null_pool=True)
    async with session_factory(engine).begin() as s:
        s.add(
            RiskAlert(
                account_id=account_id, level="warn", text=text, utilisation_pct=Decimal("81.20")
            )
        )
    await engine.dispose()


async def _held_prices(database_url: str, who: Identity) -> dict[str, Decimal]:
    engine = create_engine(database_url, null_pool=True)
    async with session_factory(engine)() as s:
        rows = await s.execute(
            held_positions(Symbol.ticker, Symbol.last, account_id=who.account_id)
        )
        prices = {ticker: last for ticker, last in rows}
    await engine.dispose()
    return prices


def _quote(last: Decimal) -> dict[str, str]:
    return {"last": str(last), "bid": str(last), "ask": str(last), "chg_pct": "0"}


async def test_fragment_needs_identity_and_shows_utilisation(settings: RiskSettings) -> None:
    alice = await identity_of(settings.database_url, "alice")
    async with running(create_app(settings)) as client:
        assert (await client.get("/components/risk_metrics")).status_code == 401
        forged = {"X-Identity": identity_headers(alice, "another-secret")["X-Identity"]}
        assert (await client.get("/components/risk_metrics", headers=forged)).status_code == 401
        r = await client.get("/components/risk_metrics", headers=identity_headers(alice))
        assert r.status_code == 200
        html = r.text
        assert 'data-component="risk_metrics"' in html
        shown = _SHOWN.search(html)
        assert shown is not None and Decimal("77.5") <= Decimal(shown.group(1)) <= Decimal(78)
        assert "gauge--warn" not in html and "gauge--critical" not in html
        assert f'id="{EXPOSURE_ID}"' in html and "Technology" in html and "sector-bar" in html
        assert f'<ul id="{ALERTS_ID}" class="alert-feed"' in html and "No alerts" in html
        assert "style=" not in html


async def test_stored_alert_shows_on_a_reload(settings: RiskSettings) -> None:
    alice = await identity_of(settings.database_url, "alice")
    await _store_alert(settings.database_url, alice.account_id, "Margin at 81.2% (stored)")
    async with running(create_app(settings)) as client:
        r = await client.get("/components/risk_metrics", headers=identity_headers(alice))
        assert 'class="alert alert--warn"' in r.text and "Margin at 81.2% (stored)" in r.text
        assert "No alerts" not in r.text
    bob = await identity_of(settings.database_url, "bob")
    async with running(create_app(settings)) as client:
        r = await client.get("/components/risk_metrics", headers=identity_headers(bob))
        assert "(stored)" not in r.text and "No alerts" in r.text


async def test_live_gauge_and_alerts_per_account(settings: RiskSettings, bus: NatsBus) -> None:
    alice = await identity_of(settings.database_url, "alice", "alice-tab-1")
    bob = await identity_of(settings.database_url, "bob", "bob-tab-1")
    ui = await collect_ui(bus, alice.user_id, "risk_metrics")
    ui_bob = await collect_ui(bus, bob.user_id, "risk_metrics")
    prices = await _held_prices(settings.database_url, alice)
    async with running(create_app(settings)) as client:
        # a mount now fills the 10 s cache
        await client.get("/components/risk_metrics", headers=identity_headers(alice))
        await bus.publish(wire.SESSION_OPENED, session_payload(alice))
        await bus.publish(wire.SESSION_OPENED, session_payload(bob))
        await wait_until(lambda: len(ui) >= 1 and len(ui_bob) >= 1)
        first = ui[0][1]
        assert first["full"] is True and first["component"] == "risk_metrics"
        # the panel, and the header's margin figure beside it
        assert [p["id"] for p in first["parts"]] == ["risk-root", "risk-summary"]
        assert f'id="{GAUGE_ID}"' in first["parts"][0]["html"]

        # alice's prices up 10 %: ≈ 85.8 % utilisation
        tick = {
            "seq": 1,
            "ts": 1700000000000.0,
            "prices": {t: _quote(last * Decimal("1.1")) for t, last in prices.items()},
        }
        await bus.publish(wire.PRICES_TICKS, tick)
        await wait_until(lambda: len(ui) >= 2)
        second = ui[1][1]
        assert second["full"] is False and second["ts"] == tick["ts"]
        ids = [p["id"] for p in second["parts"]]  # the gauge, each sector's figures, header
        assert ids[0] == GAUGE_ID and ids[-1] == "risk-summary"
        assert ids[1:-1] and all(i.startswith("risk-sector-") for i in ids[1:-1])
        gauge = second["parts"][0]["html"]
        assert 'class="gauge__fill gauge--warn"' in gauge
        shown = _SHOWN.search(gauge)
        assert shown is not None and Decimal(85) <= Decimal(shown.group(1)) <= Decimal("86")

        # the pricefeed stores the alert, then publishes the breach
        text = "Margin utilisation 85.80% crossed the warning level (80%)"
        await _store_alert(settings.database_url, alice.account_id, text)
        breach = {"level": "warn", "text": text, "ts": 1700000001000.0, "utilisation_pct": "85.80"}
        await bus.publish(wire.risk_breach(alice.account_id), breach)
        await wait_until(lambda: len(ui) >= 3)
        third = ui[2][1]
        assert third["full"] is False and [p["id"] for p in third["parts"]] == [ALERTS_ID]
        assert text in third["parts"][0]["html"] and "alert--warn" in third["parts"][0]["html"]

        # the breach dropped the cached mount: a reload shows the stored alert
        r = await client.get("/components/risk_metrics", headers=identity_headers(alice))
        assert text in r.text

        # bob's own breach, handled after alice's by the same subscription and published
        # after everything above on the same connection: his next update is this one, so
        # nothing of alice's tick or breach reached him before it
        bob_text = "Margin utilisation 80.10% crossed the warning level (80%)"
        await _store_alert(settings.database_url, bob.account_id, bob_text)
        bob_breach = {**breach, "text": bob_text, "utilisation_pct": "80.10"}
        await bus.publish(wire.risk_breach(bob.account_id), bob_breach)
        await wait_until(lambda: len(ui_bob) >= 2)
        await ui.settled()
        await ui_bob.settled()
        assert len(ui_bob) == 2
        assert [p["id"] for p in ui_bob[1][1]["parts"]] == [ALERTS_ID]
        assert bob_text in ui_bob[1][1]["parts"][0]["html"]
        assert text not in ui_bob[1][1]["parts"][0]["html"]
        assert len(ui) == 3


async def test_an_account_without_positions_shows_its_limit_unused(settings: RiskSettings) -> None:
    bob = await identity_of(settings.database_url, "bob")
    limit = await close_positions(settings.database_url, bob.account_id, Account.margin_limit)
    assert limit
    async with running(create_app(settings)) as client:
        r = await client.get("/components/risk_metrics", headers=identity_headers(bob))
    assert r.status_code == 200
    assert f"0 / {limit:,.0f} (" in r.text and _SHOWN.findall(r.text) == ["0.0"]
