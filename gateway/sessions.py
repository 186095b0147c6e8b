"""Browser sessions: the signed cookie, the ``web_sessions`` row behind it, the logged-in user."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer
from sqlalchemy import Select, any_, bindparam, delete, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.requests import HTTPConnection
from starlette.responses import Response

from shared import wire
from shared.db.models import Account, User, WebSession
from shared.db.reads import Read
from shared.identity import PERM_TRADE, Identity

__all__ = [
    "SESSION_COOKIE",
    "SessionCache",
    "SessionCookie",
    "SessionLookups",
    "SessionUser",
    "create_session",
    "current_user",
    "public_id",
    "revoke_session",
    "session_user",
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


# what a valid session's user is, and when the session expires
_USER_COLUMNS = (
    User.id,
    User.username,
    User.display_name,
    User.can_trade,
    Account.id,
    WebSession.expires_at,
)


def _valid(query: Select[*tuple[Any, ...]], now: Any) -> Select[*tuple[Any, ...]]:
    return (
        query.select_from(WebSession)
        .join(User, WebSession.user_id == User.id)
        .join(Account, Account.user_id == User.id)
        .where(WebSession.revoked_at.is_(None), WebSession.expires_at > now)
    )


_SESSION_USERS = Read(
    _valid(select(WebSession.id, *_USER_COLUMNS), bindparam("now")).where(
        WebSession.id == any_(bindparam("ids", type_=ARRAY(WebSession.id.type)))
    )
)


def session_user(
    session_id: str,
    user_id: int,
    username: str,
    display_name: str | None,
    can_trade: bool,
    account_id: int,
) -> SessionUser:
    """The user of session ``session_id``, as the services see it and the page names it."""
    permissions = frozenset({PERM_TRADE}) if can_trade else frozenset()
    identity = Identity(user_id, account_id, username, permissions, public_id(session_id))
    return SessionUser(session_id, identity, display_name or username)


def _user_of(session_id: str, row: Sequence[Any]) -> tuple[SessionUser, datetime]:
    """A row of :data:`_USER_COLUMNS` as the session's user, and when the session expires."""
    user_id, username, display_name, can_trade, account_id, expires_at = row
    return session_user(session_id, user_id, username, display_name, can_trade, account_id), (
        expires_at
    )


class SessionCache:
    """The sessions this replica found valid (or created at a login) in the last ``ttl_s``
    seconds, so that a request or handshake checks its session without a database round
    trip (the page and the socket that follow a login, and a trader's orders). Under load
    that round trip was the slowest step of an order in the gateway: each await of it
    waited behind a tick's fan-out. The heartbeat finds the sessions of this replica's
    sockets valid every ``HEARTBEAT_INTERVAL_S``, so a trader's orders never ask.

    The heartbeat's query reads each session's user afresh, so a change to the user (a
    trading permission taken away) reaches the cache within one heartbeat. An entry goes
    when its session expires, when a replica logs it out or replaces it at a login (the
    gateway announces both: ``gateway.session.revoked``), and when the heartbeat finds the
    session ended. So only a session ended without that announcement (NATS down, a row
    revoked by hand) is still honoured here, for at most ``ttl_s``
    (``GATEWAY_SESSION_CACHE_S``; 0 turns the cache off). A lookup that was under way when
    a session was dropped keeps nothing (:attr:`drops`): it may have read the session
    before it ended. Only valid sessions are kept, at most ``max_entries`` (the oldest go
    first)."""

    def __init__(
        self,
        ttl_s: float,
        max_entries: int = 100_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._users: dict[str, tuple[SessionUser, float]] = {}  # id → (user, until)
        self.drops = 0  # sessions dropped so far: a lookup begun before one keeps nothing

    def __len__(self) -> int:
        return len(self._users)

    def get(self, session_id: str) -> SessionUser | None:
        entry = self._users.get(session_id)
        if entry is None:
            return None
        if self._clock() >= entry[1]:
            del self._users[session_id]
            return None
        return entry[0]

    def put(self, user: SessionUser, expires_at: datetime, *, drops: int) -> None:
        """``user``'s session was found valid by a lookup begun when :attr:`drops` was
        ``drops``; it ends at ``expires_at``."""
        if self.ttl_s <= 0 or drops != self.drops:
            return
        left = (expires_at - datetime.now(UTC)).total_seconds()
        self._users.pop(user.session_id, None)  # re-inserted last: the newest
        self._users[user.session_id] = (user, self._clock() + min(self.ttl_s, left))
        while len(self._users) > self.max_entries:
            del self._users[next(iter(self._users))]

    def drop(self, session_id: str) -> None:
        self.drops += 1
        self._users.pop(session_id, None)


_Batch = dict[str, "asyncio.Future[SessionUser | None]"]  # session id → its waiters' answer


class SessionLookups:
    """Looks up the sessions that the cache does not hold, in batches: the lookups begun
    in one turn of the event loop share one query. After a gateway restart every tab
    reconnects at once, and each handshake looked its session up alone: a round trip and
    a pooled connection each, a thousand of them queueing for a pool of a few."""

    def __init__(self, cache: SessionCache) -> None:
        self.cache = cache
        self.queries = 0  # lookups made (tests)
        self._batch: _Batch | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def user(self, sessions: Sessions, session_id: str) -> SessionUser | None:
        """The user of an unrevoked, unexpired session, or ``None`` (every request and
        handshake asks: from the cache, else in the next batch's prepared statement)."""
        cached = self.cache.get(session_id)
        if cached is not None:
            return cached
        loop = asyncio.get_running_loop()
        batch = self._batch
        if batch is None:
            batch = self._batch = {}
            # a session dropped from now on may have been read before it ended: not kept
            loop.call_soon(self._start, sessions, batch, self.cache.drops)
        future = batch.get(session_id)
        if future is None:
            future = batch[session_id] = loop.create_future()
            future.add_done_callback(_retrieved)
        # one waiter's cancellation (a closed tab) does not fail another's
        return await asyncio.shield(future)

    def _start(self, sessions: Sessions, batch: _Batch, drops: int) -> None:
        self._batch = None
        task = asyncio.create_task(self._look_up(sessions, batch, drops))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _look_up(self, sessions: Sessions, batch: _Batch, drops: int) -> None:
        self.queries += 1
        try:
            found = await valid_sessions(sessions, set(batch))
        except Exception as exc:  # every waiter hears it (the database is down: a 503)
            for future in batch.values():
                if not future.done():
                    future.set_exception(exc)
            return
        except asyncio.CancelledError:
            for future in batch.values():
                future.cancel()
            raise
        for session_id, future in batch.items():
            hit = found.get(session_id)
            if hit is not None:
                self.cache.put(hit[0], hit[1], drops=drops)
            if not future.done():
                future.set_result(hit[0] if hit is not None else None)


def _retrieved(future: asyncio.Future[Any]) -> None:
    """Mark a failed lookup's exception seen, should every waiter have gone."""
    if not future.cancelled():
        future.exception()


async def valid_sessions(
    sessions: Sessions, session_ids: set[str]
) -> dict[str, tuple[SessionUser, datetime]]:
    """Which of ``session_ids`` are unrevoked and unexpired: each one's user, read afresh,
    and when it expires (one query for all)."""
    if not session_ids:
        return {}
    async with sessions() as db:
        rows = await _SESSION_USERS.rows(db, ids=list(session_ids), now=datetime.now(UTC))
    return {row[0]: _user_of(row[0], row[1:]) for row in rows}


REVOKED_KEPT = timedelta(minutes=5)  # long enough for every socket of it to notice


async def create_session(
    sessions: Sessions, user_id: int, max_age_s: int, *, replaces: str | None = None
) -> tuple[str, datetime]:
    """A new session for ``user_id`` (its last login stamped), and when it expires;
    ``replaces`` is revoked."""
    now = datetime.now(UTC)
    expires_at = now + timedelta(seconds=max_age_s)
    session_id = secrets.token_urlsafe(32)
    async with sessions() as db, db.begin():
        if replaces:
            await _revoke(db, replaces, now)
        db.add(
            WebSession(
                id=session_id,
                user_id=user_id,
                created_at=now,
                expires_at=expires_at,
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
    return session_id, expires_at


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
    """The logged-in user of this request or socket, from its cookie and the database (or
    this replica's :class:`SessionCache`)."""
    gw = conn.app.state.gw
    session_id = gw.cookie.session_id(conn)
    if session_id is None:
        return None
    user: SessionUser | None = await gw.lookups.user(conn.app.state.db, session_id)
    return user
