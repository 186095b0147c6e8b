"""Browser sessions: the signed cookie, the ``web_sessions`` row behind it, the logged-in user."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import bindparam, delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection
from starlette.responses import Response

from shared import wire
from shared.db.models import Account, User, WebSession
from shared.db.reads import Read
from shared.identity import PERM_TRADE, Identity

__all__ = [
    "SESSION_COOKIE",
    "SessionCookie",
    "SessionUser",
    "create_session",
    "current_user",
    "load_session",
    "revoke_session",
    "valid_sessions",
]

SESSION_COOKIE = "session"
_SALT = "gateway-session"


def public_id(session_id: str) -> str:
    """A stable handle for a web session that does not reveal the cookie's session id."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class SessionUser:
    """The user behind a valid, unrevoked web session: ``identity`` is what the services
    see (its ``session_id`` is the session's :func:`public_id`, never the cookie's),
    ``display_name`` what the page shows."""

    session_id: str
    identity: Identity
    display_name: str

    @property
    def public_id(self) -> str:
        return self.identity.session_id

    @property
    def user_id(self) -> int:
        return self.identity.user_id

    @property
    def account_id(self) -> int:
        return self.identity.account_id

    @property
    def can_trade(self) -> bool:
        return self.identity.has_perm(PERM_TRADE)

    def announcement(self, socket_session_id: str) -> dict[str, Any]:
        """The ``session.opened`` / ``session.heartbeat`` payload for one socket."""
        i = self.identity
        return wire.session_announcement(
            socket_session_id, i.user_id, i.account_id, i.username, i.permissions
        )


class SessionCookie:
    """Signs the web session id into the cookie value and reads it back."""

    def __init__(self, secret: str, max_age_s: int) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt=_SALT)
        self.max_age_s = max_age_s

    def session_id(self, conn: HTTPConnection) -> str | None:
        raw = conn.cookies.get(SESSION_COOKIE)
        if not raw:
            return None
        try:
            data = self._serializer.loads(raw, max_age=self.max_age_s)
        except BadSignature:
            return None
        sid = data.get("sid") if isinstance(data, dict) else None
        return sid if isinstance(sid, str) and sid else None

    def set(self, response: Response, session_id: str, *, secure: bool) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            self._serializer.dumps({"sid": session_id}),
            max_age=self.max_age_s,
            path="/",
            httponly=True,
            samesite="lax",
            secure=secure,
        )

    @staticmethod
    def clear(response: Response, *, secure: bool) -> None:
        response.delete_cookie(
            SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=secure
        )


Sessions = async_sessionmaker[AsyncSession]


_SESSION_USER = Read(
    select(User.id, User.username, User.display_name, User.can_trade, Account.id)
    .join(WebSession, WebSession.user_id == User.id)
    .join(Account, Account.user_id == User.id)
    .where(
        WebSession.id == bindparam("session_id"),
        WebSession.revoked_at.is_(None),
        WebSession.expires_at > bindparam("now"),
    )
)


async def load_session(sessions: Sessions, session_id: str) -> SessionUser | None:
    """The user of an unrevoked, unexpired session, or ``None`` (every request and
    handshake asks: one prepared statement, no transaction)."""
    async with sessions() as db:
        row = await _SESSION_USER.first(db, session_id=session_id, now=datetime.now(UTC))
    if row is None:
        return None
    user_id, username, display_name, can_trade, account_id = row
    permissions = frozenset({PERM_TRADE}) if can_trade else frozenset()
    identity = Identity(user_id, account_id, username, permissions, public_id(session_id))
    return SessionUser(session_id, identity, display_name or username)


async def valid_sessions(sessions: Sessions, session_ids: set[str]) -> set[str]:
    """Which of ``session_ids`` are unrevoked and unexpired (one query for all)."""
    if not session_ids:
        return set()
    query = select(WebSession.id).where(
        WebSession.id.in_(session_ids),
        WebSession.revoked_at.is_(None),
        WebSession.expires_at > datetime.now(UTC),
    )
    async with sessions() as db:
        return set((await db.execute(query)).scalars())


REVOKED_KEPT = timedelta(minutes=5)  # long enough for every socket of it to notice


async def create_session(
    sessions: Sessions, user_id: int, max_age_s: int, *, replaces: str | None = None
) -> str:
    """A new session for ``user_id`` (its last login stamped); ``replaces`` is revoked."""
    now = datetime.now(UTC)
    session_id = secrets.token_urlsafe(32)
    async with sessions() as db, db.begin():
        if replaces:
            await _revoke(db, replaces, now)
        db.add(
            WebSession(
                id=session_id,
                user_id=user_id,
                created_at=now,
                expires_at=now + timedelta(seconds=max_age_s),
            )
        )
        await db.execute(update(User).where(User.id == user_id).values(last_login_at=now))
        # the user's dead sessions go at each login, so the table holds live ones only
        await db.execute(
            delete(WebSession).where(
                WebSession.user_id == user_id,
                (WebSession.expires_at < now) | (WebSession.revoked_at < now - REVOKED_KEPT),
            )
        )
    return session_id


async def revoke_session(sessions: Sessions, session_id: str) -> None:
    async with sessions() as db, db.begin():
        await _revoke(db, session_id, datetime.now(UTC))


async def _revoke(db: AsyncSession, session_id: str, now: datetime) -> None:
    await db.execute(
        update(WebSession)
        .where(WebSession.id == session_id, WebSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def current_user(conn: HTTPConnection) -> SessionUser | None:
    """The logged-in user of this request or socket, from its cookie and the database."""
    gw = conn.app.state.gw
    session_id = gw.cookie.session_id(conn)
    if session_id is None:
        return None
    user: SessionUser | None = await load_session(conn.app.state.db, session_id)
    return user
