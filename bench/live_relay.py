"""The bare relay of the live benchmark: the gateway's baseline, in the same run.

DESIGN.md §7: a bare nats-py → Starlette relay delivering the same parts to the same sockets
is the baseline for the gateway. During each load level of :mod:`bench.bench_live` it
runs beside the gateway on the same ``ui.>`` messages of the same services, and the load
generator holds a second socket (``/ws?user=N``) for a sample of the connected traders.

It does the least that delivers the services' wire format (:mod:`shared.wire`): per-user
updates (``ui.<partition>.<component>``) to their user's sockets, whichever tab a full
render names; shared parts (``ui.shared.<component>``, keyed by topic) to the sockets of
every user whose latest full render of the component named that topic. Each message
becomes one text frame per user, the parts' html newline-joined, sent at once, one socket
after the other. Left out, all of which the gateway does: authentication, checking parts,
``hx-swap-oob``, fencing by epoch and sequence, the owner of a partition, waiting for a
tick to be complete (so one frame per tick), a per-socket buffer (newest part per id),
the pace, send timeouts, metrics.

Compression is the gateway's (``--ws gateway.wsprotocol:GatewayWebSocketProtocol``), so the
two differ in what they do per part, not in their zlib.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from shared import wire

__all__ = ["FACTORY", "Routes", "relay_app"]

FACTORY = "bench.live_relay:relay_app"
WS_PROTOCOL = "gateway.wsprotocol:GatewayWebSocketProtocol"


class Routes:
    """Which of the relay's users a ``ui.*`` message goes to, and as what frame."""

    def __init__(self) -> None:
        self.users: set[int] = set()  # users with a socket here
        self.partitions: set[str] = set()  # theirs, as in ``ui.<partition>.<component>``
        self._topics: dict[tuple[int, str], frozenset[str]] = {}  # (user, component) → topics
        self._watchers: dict[tuple[str, str], set[int]] = defaultdict(set)

    def join(self, user: int) -> None:
        """``user`` has a socket here."""
        self.users.add(user)
        self.partitions.add(str(wire.partition_of(user)))

    def wanted(self, subject: str) -> bool:
        """Whether a message on ``subject`` may be for a user here (before decoding it)."""
        tokens = subject.split(".")
        if not self.users or len(tokens) != 3:
            return False
        return tokens[1] == wire.UI_SHARED or tokens[1] in self.partitions

    def frames(self, subject: str, message: dict[str, Any]) -> dict[int, str]:
        """User → the frame of ``message`` for their sockets (users without one left out)."""
        tokens = subject.split(".")
        component = str(message.get("component", ""))
        htmls: dict[int, list[str]] = defaultdict(list)
        if len(tokens) != 3:
            return {}
        if tokens[1] == wire.UI_SHARED:
            for topic, parts in (message.get("topics") or {}).items():
                for user in self._watchers.get((component, topic), ()):
                    htmls[user] += [part["html"] for part in parts]
        else:
            for update in message.get("updates") or ():
                user = update["user"]
                if user not in self.users:
                    continue
                if update.get("full") and isinstance(update.get("topics"), list):
                    self._watch(user, component, frozenset(update["topics"]))
                htmls[user] += [part["html"] for part in update.get("parts") or ()]
        return {user: "\n".join(parts) for user, parts in htmls.items() if parts}

    def leave(self, user: int) -> None:
        """``user``'s last socket here closed."""
        self.users.discard(user)
        self.partitions = {str(wire.partition_of(u)) for u in self.users}
        for user_, component in [key for key in self._topics if key[0] == user]:
            self._watch(user_, component, frozenset())

    def _watch(self, user: int, component: str, topics: frozenset[str]) -> None:
        old = self._topics.pop((user, component), frozenset())
        for topic in old - topics:
            self._watchers[(component, topic)].discard(user)
        for topic in topics - old:
            self._watchers[(component, topic)].add(user)
        if topics:
            self._topics[(user, component)] = topics


def relay_app() -> Any:
    """The relay as an ASGI app (``uvicorn --factory``; ``NATS_URL`` from the environment)."""
    import os

    import nats
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket

    routes = Routes()
    sockets: dict[int, set[WebSocket]] = defaultdict(set)

    async def forward(msg: Any) -> None:
        if not routes.wanted(msg.subject):
            return
        for user, frame in routes.frames(msg.subject, json.loads(msg.data)).items():
            for websocket in list(sockets.get(user, ())):
                try:
                    await websocket.send_text(frame)
                except Exception:
                    pass  # closing: its reader removes it

    async def relay(websocket: WebSocket) -> None:
        await websocket.accept()
        user = int(websocket.query_params["user"])
        sockets[user].add(websocket)
        routes.join(user)
        try:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass
        finally:
            sockets[user].discard(websocket)
            if not sockets[user]:
                del sockets[user]
                routes.leave(user)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nc = await nats.connect(os.environ["NATS_URL"])
        sub = await nc.subscribe(wire.UI_ALL, cb=forward)
        yield
        await sub.unsubscribe()
        await nc.close()

    return Starlette(routes=[WebSocketRoute("/ws", relay)], lifespan=lifespan)
