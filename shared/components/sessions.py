"""Session tracking for live components: which of the gateway's sessions this replica
serves, by user and by account. Heartbeats keep a session; one silent for
``missed_heartbeats`` intervals is forgotten (its gateway died without saying so)."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from shared.identity import Identity

__all__ = ["LiveSession", "SessionTable", "identity_of"]


@dataclass
class LiveSession:
    identity: Identity
    last_seen: float


def identity_of(payload: Mapping[str, Any]) -> Identity:
    """The identity a ``session.*`` announcement carries; KeyError, TypeError or
    ValueError when it is malformed."""
    return Identity(
        user_id=int(payload["user_id"]),
        account_id=int(payload["account_id"]),
        username=str(payload.get("username", "")),
        permissions=frozenset(payload.get("permissions") or ()),
        session_id=str(payload["session_id"]),
    )


class SessionTable(Mapping[str, LiveSession]):
    """Sessions by id (a read-only mapping), with the user → sessions and account → users
    indices that route messages addressed to a user or an account."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._by_id: dict[str, LiveSession] = {}
        self._user_sessions: dict[int, set[str]] = defaultdict(set)
        self._account_users: dict[int, set[int]] = defaultdict(set)

    def __getitem__(self, session_id: str) -> LiveSession:
        return self._by_id[session_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def add(self, identity: Identity) -> None:
        """Track (or refresh) a session, seen now."""
        self._by_id[identity.session_id] = LiveSession(identity, self.clock())
        self._account_users[identity.account_id].add(identity.user_id)
        self._user_sessions[identity.user_id].add(identity.session_id)

    def beat(self, session_id: str) -> LiveSession | None:
        """A heartbeat: the session, seen now (``None``: not tracked)."""
        session = self._by_id.get(session_id)
        if session is not None:
            session.last_seen = self.clock()
        return session

    def remove(self, session_id: str) -> tuple[LiveSession | None, bool]:
        """Forget a session: it (``None`` if unknown), and whether it was its user's last."""
        session = self._by_id.pop(session_id, None)
        if session is None:
            return None, False
        user_id, account_id = session.identity.user_id, session.identity.account_id
        sessions = self._user_sessions.get(user_id)
        if sessions is not None:
            sessions.discard(session_id)
            if sessions:
                return session, False
        self._user_sessions.pop(user_id, None)
        users = self._account_users.get(account_id)
        if users is not None:
            users.discard(user_id)
            if not users:
                del self._account_users[account_id]
        return session, True

    def identity_of_user(self, user_id: int) -> Identity | None:
        """The identity of one of ``user_id``'s sessions, if any is tracked."""
        sessions = self._user_sessions.get(user_id)
        return self._by_id[next(iter(sessions))].identity if sessions else None

    def users_of_account(self, account_id: int) -> set[int]:
        return self._account_users.get(account_id, set())

    def stale(self, max_silence: float) -> list[str]:
        """The ids of sessions not seen for ``max_silence`` seconds."""
        deadline = self.clock() - max_silence
        return [sid for sid, s in self._by_id.items() if s.last_seen < deadline]

    def clear(self) -> None:
        self._by_id.clear()
        self._user_sessions.clear()
        self._account_users.clear()
