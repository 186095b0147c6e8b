"""Who is calling: the identity the gateway signs into ``X-Identity`` for the services."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

__all__ = [
    "IDENTITY_MAX_AGE_S",
    "PERM_TRADE",
    "AnonymousUser",
    "Identity",
    "InvalidIdentity",
    "Revocations",
    "sign_identity",
    "verify_identity",
]

PERM_TRADE = "trade"
IDENTITY_MAX_AGE_S = 15  # the gateway signs one per request; a captured one soon expires
_SALT = "x-identity"


@dataclass(frozen=True, slots=True)
class Identity:
    """An authenticated trader as the services see them."""

    user_id: int
    account_id: int
    username: str
    permissions: frozenset[str] = field(default_factory=frozenset)
    session_id: str = ""

    is_authenticated = True

    def has_perm(self, perm: str) -> bool:
        return perm in self.permissions

    def to_wire(self) -> dict[str, object]:
        return {
            "uid": self.user_id,
            "aid": self.account_id,
            "u": self.username,
            "p": sorted(self.permissions),
            "sid": self.session_id,
        }

    @classmethod
    def from_wire(cls, data: dict[str, object]) -> Identity:
        perms = data.get("p") or []
        assert isinstance(perms, list)
        return cls(
            user_id=int(str(data["uid"])),
            account_id=int(str(data["aid"])),
            username=str(data["u"]),
            permissions=frozenset(str(p) for p in perms),
            session_id=str(data.get("sid", "")),
        )


@dataclass(frozen=True, slots=True)
class AnonymousUser:
    """No identity: every permission check fails."""

    is_authenticated = False
    user_id = None
    account_id = None
    username = ""
    permissions: frozenset[str] = frozenset()

    def has_perm(self, perm: str) -> bool:
        return False


class InvalidIdentity(Exception):
    """The ``X-Identity`` token is missing, forged or expired."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@lru_cache(maxsize=8)  # one per secret (two while a secret rotates): built once, not per request
def _serializer(secret: str) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(secret, salt=_SALT)


def sign_identity(identity: Identity, secret: str) -> str:
    return _serializer(secret).dumps(identity.to_wire())


def verify_identity(token: str | None, secret: str, max_age: int = IDENTITY_MAX_AGE_S) -> Identity:
    if not token:
        raise InvalidIdentity("missing identity")
    try:
        data = _serializer(secret).loads(token, max_age=max_age)
    except SignatureExpired as exc:
        raise InvalidIdentity("identity expired") from exc
    except BadSignature as exc:
        raise InvalidIdentity("identity signature invalid") from exc
    try:
        return Identity.from_wire(data)
    except (KeyError, ValueError, AssertionError, TypeError) as exc:
        raise InvalidIdentity("identity malformed") from exc


class Revocations:
    """Web sessions that ended (logout), by public id, remembered as long as a token
    signed before the logout could still be valid: such a token is refused."""

    def __init__(
        self, max_age: float = IDENTITY_MAX_AGE_S, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._max_age, self._clock = max_age, clock
        self._until: dict[str, float] = {}

    def revoke(self, public_id: str) -> None:
        now = self._clock()
        self._until = {k: t for k, t in self._until.items() if t > now}
        self._until[public_id] = now + self._max_age + 1

    def __contains__(self, public_id: object) -> bool:
        until = self._until.get(str(public_id))
        return until is not None and until > self._clock()
