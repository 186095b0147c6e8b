"""Fakes for the framework tests: a settable clock, signed identities, an in-process app."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from shared.identity import Identity, sign_identity
from shared.settings import ServiceSettings


class FakeClock:
    """``datetime`` now for limiters; :meth:`monotonic` for caches and live sessions."""

    def __init__(self) -> None:
        self.now = datetime(2025, 1, 2, 9, 30, tzinfo=UTC)
        self.start = self.now

    def __call__(self) -> datetime:
        return self.now

    def monotonic(self) -> float:
        return (self.now - self.start).total_seconds()

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def settings() -> ServiceSettings:
    return ServiceSettings.model_validate({"IDENTITY_SECRET": "unit-test-secret"})


def token(identity: Identity, secret: str = "unit-test-secret") -> str:
    return sign_identity(identity, secret)
