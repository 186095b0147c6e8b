from __future__ import annotations

import importlib

import pytest
from pydantic import ValidationError

from shared.launcher import SERVICES, ServiceSpec
from shared.settings import (
    DEV_PLACEHOLDER_SECRET,
    ServiceSettings,
    WeakDatabasePasswordError,
    async_database_url,
    database_password_problem,
)


def settings_class(spec: ServiceSpec) -> type[ServiceSettings]:
    """The process's settings class, found beside its factory (``<package>.settings``)."""
    package = spec.factory.split(":")[0].rsplit(".", 1)[0]
    module = importlib.import_module(f"{package}.settings")
    (cls,) = [
        value
        for value in vars(module).values()
        if isinstance(value, type)
        and issubclass(value, ServiceSettings)
        and value is not ServiceSettings
        and value.__module__ == module.__name__
    ]
    return cls


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
    monkeypatch.delenv("PGPASSWORD", raising=False)
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


# -- the database password in production (README "Deploying": at least 32 characters) ----------

STRONG = "Zq8" + "x" * 29  # 32 characters
PRODUCTION = {
    "APP_ENV": "production",
    "IDENTITY_SECRET": "s3cr3t-from-the-vault-0123456789abcdef",
    "NATS_URL": "nats://nats.internal:4222",
}


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PGPASSWORD", raising=False)
    return monkeypatch


WEAK_URLS = {
    "short": "postgresql://trading:hunter2@db.internal:5432/trading",
    "31 characters": f"postgresql://trading:{STRONG[:-1]}@db.internal/trading",
    "empty": "postgresql://trading:@db.internal/trading",
    "the placeholder": f"postgresql+asyncpg://trading:{DEV_PLACEHOLDER_SECRET}@db/trading",
    "short once decoded": "postgresql://trading:" + "%41" * 20 + "@db.internal/trading",
}


@pytest.mark.parametrize("url", WEAK_URLS.values(), ids=WEAK_URLS.keys())
def test_production_refuses_a_weak_database_password(
    production: pytest.MonkeyPatch, url: str
) -> None:
    production.setenv("DATABASE_URL", url)
    with pytest.raises(ValidationError, match=r"DATABASE_URL has .*database password") as caught:
        ServiceSettings()
    assert isinstance(caught.value.errors()[0]["ctx"]["error"], WeakDatabasePasswordError)
    message = str(caught.value)
    password = url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    assert not password or password not in message, "the error must not echo the password"
    assert "db.internal" not in message, "nor the environment"


def test_production_refuses_a_weak_pgpassword(production: pytest.MonkeyPatch) -> None:
    production.setenv("DATABASE_URL", "postgresql://trading@db.internal/trading")
    production.setenv("PGPASSWORD", "hunter2")
    with pytest.raises(ValidationError, match="shorter than 32 characters"):
        ServiceSettings()
    production.setenv("PGPASSWORD", STRONG)
    assert ServiceSettings().environment == "production"


STRONG_URLS = {
    "32 characters": f"postgresql://trading:{STRONG}@db.internal:5432/trading",
    "percent-encoded": "postgresql://trading:" + "%2F" * 32 + "@db.internal/trading",
    "client certificate": "postgresql://trading:@db.internal/trading?sslcert=/tls/c.crt",
    "unix socket": "postgresql://postgres:@/trading?host=/run/postgresql",
    "no password to judge (a passfile)": "postgresql://trading@db.internal/trading",
}


@pytest.mark.parametrize("url", STRONG_URLS.values(), ids=STRONG_URLS.keys())
def test_production_accepts_a_strong_or_unjudgeable_password(
    production: pytest.MonkeyPatch, url: str
) -> None:
    production.setenv("DATABASE_URL", url)
    assert ServiceSettings().database_url == url


@pytest.mark.parametrize("env", ["development", "test"])
def test_the_database_password_is_judged_in_production_only(
    monkeypatch: pytest.MonkeyPatch, env: str
) -> None:
    monkeypatch.setenv("APP_ENV", env)
    monkeypatch.setenv("IDENTITY_SECRET", PRODUCTION["IDENTITY_SECRET"])
    monkeypatch.setenv("DATABASE_URL", WEAK_URLS["short"])
    assert ServiceSettings().environment == env


def test_database_password_problem_never_names_the_password() -> None:
    problem = database_password_problem(WEAK_URLS["short"], environ={})
    assert problem and "hunter2" not in problem
    assert database_password_problem(STRONG_URLS["32 characters"], environ={}) is None


# -- <PREFIX>_DB_POOL_SIZE: every process's own (tests/service/test_db_pool_size.py runs them) ---


@pytest.mark.parametrize("spec", SERVICES, ids=[s.name for s in SERVICES])
def test_every_process_reads_its_own_pool_size(
    monkeypatch: pytest.MonkeyPatch, spec: ServiceSpec
) -> None:
    prefix = spec.port_env.removesuffix("PORT")
    monkeypatch.setenv(f"{prefix}DB_POOL_SIZE", "3")
    monkeypatch.setenv("DB_POOL_SIZE", "9")  # unprefixed: nobody's
    assert settings_class(spec)().db_pool_size == 3
