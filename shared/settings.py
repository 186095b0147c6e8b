"""Typed settings shared by every process.

Each process has one settings class (in its own ``settings.py``) deriving from
:class:`ServiceSettings` with its own env prefix. The few values every process needs
(database, NATS, the identity secret, the environment) are read from unprefixed
variables, so one ``DATABASE_URL`` configures the whole stack.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "DEV_PLACEHOLDER_SECRET",
    "POOL_TIMEOUT_S",
    "Environment",
    "PlaceholderSecretError",
    "ServiceSettings",
    "WeakDatabasePasswordError",
    "async_database_url",
    "database_password_problem",
]

Environment = Literal["development", "test", "production"]

DEV_PLACEHOLDER_SECRET = "dev-only-insecure-secret-change-me"
MIN_SECRET_LENGTH = 32  # an HMAC key anyone can guess or brute-force protects nothing
DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/trading"
DEFAULT_NATS_URL = "nats://127.0.0.1:4222"

# how long a database checkout waits for a connection when every one is in use: a request
# waiting longer is answered "busy, retry" (503) well before the gateway gives up on it
# (5 s), when it could only say that an order may or may not have been placed
POOL_TIMEOUT_S = 2.0


class PlaceholderSecretError(ValueError):
    """Outside development, a secret is the development placeholder, empty, or too short."""

    def __init__(self, field: str, environment: str, problem: str = "") -> None:
        self.field = field
        self.environment = environment
        self.problem = problem or "holds the development placeholder"
        super().__init__(f"{field} {self.problem} but APP_ENV={environment}; set a real secret")


class WeakDatabasePasswordError(PlaceholderSecretError):
    """In production, the database password is empty, too short or the placeholder."""


def database_password_problem(url: str, environ: Mapping[str, str] = os.environ) -> str | None:
    """What is wrong with the password a process would log in to PostgreSQL with, or None.

    The password is the one in ``url``, else ``PGPASSWORD`` (asyncpg reads it). Over a unix
    socket nothing is judged (the server authenticates the socket's peer, e.g. ``peer``); with
    a client certificate (``sslcert=``) a password is optional; a password the process cannot
    see (a passfile) cannot be judged here. Never returns the password itself.
    """
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    hosts = [*query.get("host", []), *([parts.hostname] if parts.hostname else [])]
    if query.get("host") and all(host.startswith("/") for host in hosts):
        return None
    if parts.password is not None:
        password: str | None = unquote(parts.password)
    else:
        password = environ.get("PGPASSWORD")
    if password is None:
        return None
    if password == "":
        return None if "sslcert" in query else "has an empty database password"
    if password == DEV_PLACEHOLDER_SECRET:
        return "has the development placeholder as its database password"
    if len(password) < MIN_SECRET_LENGTH:
        return f"has a database password shorter than {MIN_SECRET_LENGTH} characters"
    return None


def async_database_url(url: str) -> str:
    """Return ``url`` with the asyncpg driver, accepting plain ``postgresql://`` URIs."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    return url


class ServiceSettings(BaseSettings):
    """Settings every process has. Subclasses set ``env_prefix`` and a default port."""

    # hide_input_in_errors: a refused setting's error must not echo the environment (secrets,
    # the database URL and its password) into the log
    model_config = SettingsConfigDict(extra="ignore", env_prefix="", hide_input_in_errors=True)

    environment: Environment = Field(
        "development", validation_alias=AliasChoices("APP_ENV", "ENVIRONMENT")
    )
    database_url: str = Field(DEFAULT_DATABASE_URL, validation_alias="DATABASE_URL")
    nats_url: str = Field(DEFAULT_NATS_URL, validation_alias="NATS_URL")
    identity_secret: SecretStr = Field(
        SecretStr(DEV_PLACEHOLDER_SECRET), validation_alias="IDENTITY_SECRET"
    )
    # NATS identity (DESIGN.md §3.2; the server enforces each identity's subjects): a
    # credentials file (NKey/JWT) or a user and password; TLS when a CA is given
    nats_creds: str = Field("", validation_alias="NATS_CREDS")
    nats_user: str = Field("", validation_alias="NATS_USER")
    nats_password: SecretStr | None = Field(None, validation_alias="NATS_PASSWORD")
    nats_tls_ca: str = Field("", validation_alias="NATS_TLS_CA")
    nats_tls_cert: str = Field("", validation_alias="NATS_TLS_CERT")
    nats_tls_key: str = Field("", validation_alias="NATS_TLS_KEY")
    log_level: str = Field("INFO", validation_alias="LOG_LEVEL")
    log_format: Literal["text", "json"] = Field("text", validation_alias="LOG_FORMAT")
    host: str = "127.0.0.1"
    port: int = 8000
    db_pool_size: int = 5
    db_pool_timeout_s: float = Field(POOL_TIMEOUT_S, gt=0)  # then "busy, retry" (503)
    # how often gateways announce their sockets; services forget a session after three
    # missed announcements (one setting for both sides: they must agree)
    heartbeat_interval_s: float = Field(10.0, gt=0, validation_alias="HEARTBEAT_INTERVAL_S")
    # leases in JetStream KV (DESIGN.md §8): how long one lives without renewal, and the
    # name this replica writes into them (a pod's name; default host and process id)
    lease_ttl_s: float = Field(5.0, gt=0.5, validation_alias="LEASE_TTL_S")
    replica_id: str = Field("", validation_alias="REPLICA_ID")

    @property
    def async_database_url(self) -> str:
        return async_database_url(self.database_url)

    def nats_options(self) -> dict[str, Any]:
        """Keyword arguments for ``nats.connect``: this process's identity and TLS."""
        options: dict[str, Any] = {}
        if self.nats_creds:
            options["user_credentials"] = self.nats_creds
        elif self.nats_user:
            options["user"] = self.nats_user
            if self.nats_password is not None:
                options["password"] = self.nats_password.get_secret_value()
        if self.nats_tls_ca:
            context = ssl.create_default_context(cafile=self.nats_tls_ca)
            if self.nats_tls_cert:
                context.load_cert_chain(self.nats_tls_cert, self.nats_tls_key or None)
            options["tls"] = context
        return options

    def secret_fields(self) -> dict[str, SecretStr]:
        """Every secret of this process, by field name (subclasses add theirs)."""
        return {
            name: value
            for name in type(self).model_fields
            if isinstance(value := getattr(self, name), SecretStr)
        }

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> ServiceSettings:
        if self.environment == "development":
            return self
        for name, value in self.secret_fields().items():
            secret = value.get_secret_value()
            if secret == DEV_PLACEHOLDER_SECRET:
                raise PlaceholderSecretError(name, self.environment)
            if len(secret) < MIN_SECRET_LENGTH:
                raise PlaceholderSecretError(
                    name, self.environment, f"is shorter than {MIN_SECRET_LENGTH} characters"
                )
        if self.environment == "production":  # never localhost by default in production
            for name in ("database_url", "nats_url"):
                if name not in self.model_fields_set:
                    raise PlaceholderSecretError(
                        name.upper(), self.environment, "is not set (the default is localhost)"
                    )
            if problem := database_password_problem(self.database_url):
                raise WeakDatabasePasswordError("DATABASE_URL", self.environment, problem)
        return self
