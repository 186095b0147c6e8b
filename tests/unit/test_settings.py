from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.settings import DEV_PLACEHOLDER_SECRET, ServiceSettings, async_database_url


def test_development_accepts_the_placeholder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("IDENTITY_SECRET", raising=False)
    monkeypatch.setenv("APP_ENV", "development")
    assert ServiceSettings().identity_secret.get_secret_value() == DEV_PLACEHOLDER_SECRET


@pytest.mark.parametrize("env", ["production", "test"])
def test_placeholder_secret_refused_outside_development(
    monkeypatch: pytest.MonkeyPatch, env: str
) -> None:
    monkeypatch.delenv("IDENTITY_SECRET", raising=False)
    monkeypatch.setenv("APP_ENV", env)
    with pytest.raises(ValidationError, match=r"identity_secret"):
        ServiceSettings()


@pytest.mark.parametrize("secret", ["", "a", "s3cr3t-from-the-vault"])
def test_empty_or_short_secret_refused_outside_development(
    monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("IDENTITY_SECRET", secret)
    with pytest.raises(ValidationError, match="shorter than 32"):
        ServiceSettings()


def test_real_secret_accepted_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("IDENTITY_SECRET", "s3cr3t-from-the-vault-0123456789abcdef")
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.internal/trading")
    monkeypatch.setenv("NATS_URL", "nats://nats.internal:4222")
    assert ServiceSettings().environment == "production"


@pytest.mark.parametrize("missing", ["DATABASE_URL", "NATS_URL"])
def test_production_never_falls_back_to_localhost(
    monkeypatch: pytest.MonkeyPatch, missing: str
) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("IDENTITY_SECRET", "s3cr3t-from-the-vault-0123456789abcdef")
    monkeypatch.setenv("DATABASE_URL", "postgresql://db.internal/trading")
    monkeypatch.setenv("NATS_URL", "nats://nats.internal:4222")
    monkeypatch.delenv(missing)
    with pytest.raises(ValidationError, match=f"{missing} is not set"):
        ServiceSettings()


def test_plain_postgres_uri_gets_the_async_driver() -> None:
    uri = "postgresql://postgres:@/postgres?host=/tmp/x"
    assert async_database_url(uri) == "postgresql+asyncpg://postgres:@/postgres?host=/tmp/x"
