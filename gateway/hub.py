"""The open browser sockets of this gateway process, by web session, so logout can close them."""

from __future__ import annotations

from collections import defaultdict
from typing import Protocol

__all__ = ["CLOSE_GOING_AWAY", "CLOSE_POLICY", "CLOSE_RESTART", "CLOSE_TRY_AGAIN", "SocketHub"]

# Close codes. htmx-ext-ws reconnects after 1006/1011/1012/1013 only (static/vendor/README.md).
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008  # logged out / session invalid: final, the page says "offline — reload"
CLOSE_RESTART = 1012  # gateway shutting down: the browser reconnects with backoff
CLOSE_TRY_AGAIN = 1013  # too slow to keep up: the browser reconnects and gets full renders


class Closable(Protocol):
    web_session_id: str
    user_id: int

    def request_close(self, code: int, reason: str) -> None: ...

    def announce(self) -> None: ...


class SocketHub:
    def __init__(self) -> None:
        self._by_session: dict[str, set[Closable]] = defaultdict(set)

    def __len__(self) -> int:
        return sum(len(conns) for conns in self._by_session.values())

    def add(self, conn: Closable) -> None:
        self._by_session[conn.web_session_id].add(conn)

    def remove(self, conn: Closable) -> None:
        conns = self._by_session.get(conn.web_session_id)
        if conns is not None:
            conns.discard(conn)
            if not conns:
                del self._by_session[conn.web_session_id]

    def close_session(self, web_session_id: str, code: int, reason: str) -> int:
        """Ask every socket of one web session to close; how many there were."""
        conns = list(self._by_session.get(web_session_id, ()))
        for conn in conns:
            conn.request_close(code, reason)
        return len(conns)

    def connections(self) -> list[Closable]:
        return [conn for conns in self._by_session.values() for conn in conns]

    def close_all(self, code: int, reason: str) -> None:
        for conns in list(self._by_session.values()):
            for conn in list(conns):
                conn.request_close(code, reason)
