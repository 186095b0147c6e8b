"""Pricefeed settings: prefixed variables, shared unprefixed ones, the HTTP provider's URL."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.pricefeed.settings import PricefeedSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PRICEFEED_PORT", "PRICEFEED_PROVIDER", "PRICEFEED_TICK_INTERVAL_MS"):
        monkeypatch.delenv(name, raising=False)
    s = PricefeedSettings()
    assert (s.port, s.provider, s.tick_interval_s, s.db_write_interval_s) == (
        8005,
        "simulation",
        0.25,
        1.0,
    )


def test_reads_prefixed_and_shared_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRICEFEED_TICK_INTERVAL_MS", "100")
    monkeypatch.setenv("PRICEFEED_SEED", "42")
    monkeypatch.setenv("PRICEFEED_PORT", "9105")
    monkeypatch.setenv("NATS_URL", "nats://10.0.0.1:4222")
    s = PricefeedSettings()
    assert (s.tick_interval_ms, s.seed, s.port, s.nats_url) == (
        100,
        42,
        9105,
        "nats://10.0.0.1:4222",
    )


def test_http_provider_needs_a_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRICEFEED_PROVIDER", "http")
    monkeypatch.delenv("PRICEFEED_HTTP_URL", raising=False)
    with pytest.raises(ValidationError, match="PRICEFEED_HTTP_URL"):
        PricefeedSettings()
    monkeypatch.setenv("PRICEFEED_HTTP_URL", "http://127.0.0.1:9/q")
    assert PricefeedSettings().http_url == "http://127.0.0.1:9/q"


def test_the_leader_lease_is_the_pricefeeds_own_and_shorter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PRICEFEED_LEASE_TTL_S", raising=False)
    monkeypatch.setenv("LEASE_TTL_S", "5")  # the component services' leases
    assert PricefeedSettings().lease_ttl_s == 3.0
    monkeypatch.setenv("PRICEFEED_LEASE_TTL_S", "2.5")
    assert PricefeedSettings().lease_ttl_s == 2.5
