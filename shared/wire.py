"""Every name that crosses a process boundary: NATS subjects, HTTP headers, element ids.

No other module spells these as literals.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable

__all__ = [
    "COMPONENTS",
    "GATEWAY_PACE",
    "GATEWAY_SESSION_REVOKED",
    "HEADER_CSRF",
    "HEADER_IDENTITY",
    "HEADER_OPS_RELEASE",
    "HEADER_REQUEST_ID",
    "PRICES_TICKS",
    "SESSION_ANNOUNCE",
    "SESSION_CLOSED",
    "SESSION_HEARTBEAT",
    "SESSION_OPENED",
    "UI_ALL",
    "element_id",
    "lease_bucket",
    "live_refresh",
    "orders_events",
    "partition_of",
    "risk_breach",
    "session_announcement",
    "topic_partition",
    "ui_partition_subject",
    "ui_shared_subject",
    "ui_subject",
    "ui_update",
]

# NATS subjects (DESIGN.md §3.2)
PRICES_TICKS = "prices.ticks"
SESSION_OPENED = "session.opened"
SESSION_CLOSED = "session.closed"
SESSION_HEARTBEAT = "session.heartbeat"
# gateway → services: a web session logged out {public_id}: refuse X-Identity tokens of it
SESSION_REVOKED = "session.revoked"
SESSION_ALL = "session.*"  # one subscription, so a session's open/close stay in order
# gateway → component services: these sockets are open, send them full renders (after a
# takeover, a sequence gap or an overflow) {components: [...], sessions: [...]}
SESSION_ANNOUNCE = "session.announce"
# component service → gateways: I took over these partitions, re-announce their sockets
# {components: [...], partitions: [...]}
GATEWAY_RESYNC = "gateway.resync"
# gateway → component services: this gateway cannot keep up with the ticks; bring live
# instances up to date at most once per ``interval`` seconds (the ticks in between merged)
# until ``ttl`` seconds pass without another {src, interval, ttl} (interval 0: every tick)
GATEWAY_PACE = "gateway.pace"
PACE_MAX_INTERVAL_S = 2.0  # the slowest pace a gateway asks for, and a service keeps
# any replica → the owner of a user's live instance: reload it from the database
# ``live.refresh.<component>`` {user: id}
LIVE_REFRESH_ALL = "live.refresh.*"
# ui.<partition>.<component>: per-user updates, batched per partition and tick;
# ui.shared.<component>: parts every user who shows their topic sees alike. Every ui.*
# message names its producer and sequence (src, seq) and when it was sent (sent, epoch ms:
# how late a gateway reads, apart from how long the services took over the tick's ts).
UI_ALL = "ui.>"
UI_SHARED = "shared"
LIVE_PARTITIONS = 64
# gateway → gateway replicas: a web session was logged out; close its sockets
GATEWAY_SESSION_REVOKED = "gateway.session.revoked"
RISK_BREACH_ALL = "risk.breach.*"
ORDERS_EVENTS_ALL = "orders.events.*"
ORDER_EVENTS_STREAM = "ORDER_EVENTS"  # the JetStream stream that stores them (the outbox's)
# Subject templates a component subscribes to, filled per live account by the framework
ORDERS_EVENTS_TEMPLATE = "orders.events.{account_id}"
RISK_BREACH_TEMPLATE = "risk.breach.{account_id}"


def session_announcement(
    session_id: str, user_id: int, account_id: int, username: str, permissions: Iterable[str]
) -> dict[str, object]:
    """The ``session.opened`` / ``session.heartbeat`` / ``session.closed`` payload."""
    return {
        "session_id": session_id,
        "user_id": user_id,
        "account_id": account_id,
        "username": username,
        "permissions": sorted(permissions),
    }


def risk_breach(account_id: int) -> str:
    return f"risk.breach.{account_id}"


def orders_events(account_id: int) -> str:
    return f"orders.events.{account_id}"


def partition_of(user_id: int) -> int:
    """The live partition of a user: ``crc32(user_id) % LIVE_PARTITIONS``."""
    return zlib.crc32(str(user_id).encode()) % LIVE_PARTITIONS


def topic_partition(topic: str) -> int:
    """The live partition whose owner renders a shared topic of a component whose shared
    parts stand alone (``Component.shared_by_topic``)."""
    return zlib.crc32(topic.encode()) % LIVE_PARTITIONS


def live_refresh(component: str) -> str:
    return f"live.refresh.{component}"


def lease_bucket(service: str) -> str:
    """The JetStream KV bucket of a service's leases (partitions, members, roles)."""
    return f"leases_{service}"


def ui_partition_subject(partition: int, component: str) -> str:
    return f"ui.{partition}.{component}"


def ui_subject(user_id: int, component: str) -> str:
    """Where per-user updates of ``component`` for ``user_id`` are published."""
    return ui_partition_subject(partition_of(user_id), component)


def ui_shared_subject(component: str) -> str:
    return f"ui.{UI_SHARED}.{component}"


def ui_update(
    user_id: int,
    parts: list[dict[str, str]],
    *,
    full: bool,
    session: str | None = None,
    topics: Iterable[str] | None = None,
) -> dict[str, object]:
    """One user's entry in a ``ui.<partition>.<component>`` message's ``updates``.

    ``session`` targets one socket (a connecting tab's full render; with no parts: the
    component shows that page nothing, as for a user without its permission); ``topics``
    (sent with every full render) names the shared parts this user's page shows for the
    component.
    """
    update: dict[str, object] = {"user": user_id, "full": full, "parts": parts}
    if session is not None:
        update["session"] = session
    if topics is not None:
        update["topics"] = sorted(topics)
    return update


def account_of_subject(subject: str) -> int:
    """The account id at the end of ``risk.breach.<id>`` / ``orders.events.<id>``."""
    return int(subject.rsplit(".", 1)[1])


# Events a component's on_ws_message receives (the seed's names)
EVENT_PRICE_TICK = "price_tick"
EVENT_RISK_BREACH = "risk_breach"
EVENT_ORDER = "order_event"

# HTTP headers
HEADER_IDENTITY = "X-Identity"
HEADER_REQUEST_ID = "X-Request-ID"
HEADER_CSRF = "X-CSRF-Token"
# POST /ops/release: a header no cross-site form can send (deploy/prestop.py sends it)
HEADER_OPS_RELEASE = "X-Ops-Release"
HEADER_RETRY_AFTER = "Retry-After"
HEADER_RATELIMIT_POLICY = "RateLimit-Policy"
HEADER_RATELIMIT = "RateLimit"

# Dashboard components, by the name each service registers
COMPONENTS = ("portfolio", "watchlist", "order", "risk_metrics")

# Element-id prefixes: every live element id starts with its component's prefix
ID_PREFIX = {
    "portfolio": "portfolio",
    "watchlist": "watchlist",
    "order": "order",
    "risk_metrics": "risk",
}


_NOT_ID = re.compile(r"[^A-Za-z0-9_-]")


def element_id(component: str, *parts: object) -> str:
    """``element_id("portfolio", "row", "AAPL")`` → ``"portfolio-row-AAPL"``.

    Characters that would need escaping in a CSS selector (``BRK.B``) become ``_``.
    """
    return "-".join([ID_PREFIX[component], *(_NOT_ID.sub("_", str(p)) for p in parts)])


def browser_event_url(component: str, event: str) -> str:
    """Where the page posts a component event: the gateway's proxy."""
    return f"/c/{component}/{event}"
