"""Who may say what on NATS: one identity per process kind, and the subjects it may use.

The server enforces these (nats-server ``authorization { users [...] }``): only the
pricefeed publishes ticks and risk alerts, only the orders service order events, only
component services ``ui.*``, only gateways ``session.*``; a gateway reads ``ui.*`` but
cannot write it. :func:`server_config` renders the server's configuration,
:func:`ensure_credentials` makes (once) a random password per identity; ``make run`` keeps
both under ``.data/`` and hands each child its own identity (``NATS_USER`` /
``NATS_PASSWORD``). Deployments give each process a credentials file or a user and
password from a secret and configure the server the same way.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from shared import wire

__all__ = ["IDENTITIES", "Permissions", "ensure_credentials", "identity_of", "server_config"]

INBOX = "_INBOX.>"  # replies to this client's requests (JetStream API answers, acks)
JETSTREAM_INFO = "$JS.API.INFO"


def jetstream(stream: str) -> tuple[str, ...]:
    """The JetStream API, flow control and acks of one stream only (a KV bucket is the
    stream ``KV_<bucket>``): its info, create and update, its messages and consumers (a KV
    watch). Nobody's else: a service cannot delete or purge another's leases, nor the
    order events."""
    return (
        f"$JS.API.*.*.{stream}",  # STREAM.INFO|CREATE|UPDATE, CONSUMER.CREATE, DIRECT.GET
        f"$JS.API.*.*.{stream}.>",  # CONSUMER.CREATE|DELETE|INFO.<consumer>…, DIRECT.GET.<key>
        f"$JS.API.*.*.*.{stream}",  # STREAM.MSG.GET
        f"$JS.API.*.*.*.{stream}.>",  # CONSUMER.MSG.NEXT.<consumer>
        f"$JS.FC.{stream}.>",
        f"$JS.ACK.{stream}.>",
    )


@dataclass(frozen=True)
class Permissions:
    publish: tuple[str, ...]
    subscribe: tuple[str, ...]


def _kv(service: str) -> tuple[str, ...]:
    """A service's lease bucket: its keys and its stream's JetStream API."""
    bucket = wire.lease_bucket(service)
    return (f"$KV.{bucket}.>", JETSTREAM_INFO, *jetstream(f"KV_{bucket}"))


_COMPONENT_PUBLISH = (wire.UI_ALL, wire.LIVE_REFRESH_ALL, wire.GATEWAY_RESYNC)
_COMPONENT_SUBSCRIBE = (
    wire.SESSION_ALL,
    wire.GATEWAY_PACE,
    wire.PRICES_TICKS,
    wire.ORDERS_EVENTS_ALL,
    wire.RISK_BREACH_ALL,
    wire.LIVE_REFRESH_ALL,
    INBOX,
)

IDENTITIES: dict[str, Permissions] = {
    "gateway": Permissions(
        publish=(wire.SESSION_ALL, wire.GATEWAY_SESSION_REVOKED, wire.GATEWAY_PACE),
        subscribe=(wire.UI_ALL, wire.GATEWAY_RESYNC, wire.GATEWAY_SESSION_REVOKED, INBOX),
    ),
    "pricefeed": Permissions(
        publish=(wire.PRICES_TICKS, wire.RISK_BREACH_ALL, *_kv("pricefeed")),
        subscribe=(wire.PRICES_TICKS, wire.RISK_BREACH_ALL, wire.ORDERS_EVENTS_ALL, INBOX),
    ),
    "orders": Permissions(
        publish=(
            *_COMPONENT_PUBLISH,
            wire.ORDERS_EVENTS_ALL,
            *_kv("orders"),
            *jetstream(wire.ORDER_EVENTS_STREAM),
        ),
        subscribe=_COMPONENT_SUBSCRIBE,
    ),
    **{
        service: Permissions(
            publish=(*_COMPONENT_PUBLISH, *_kv(service)), subscribe=_COMPONENT_SUBSCRIBE
        )
        for service in ("portfolio", "watchlist", "risk")
    },
}


def identity_of(process: str) -> str:
    """The NATS identity a process (launcher name, e.g. ``portfolio``) connects as."""
    if process not in IDENTITIES:
        raise KeyError(f"no NATS identity for {process!r}")
    return process


def ensure_credentials(path: Path) -> dict[str, str]:
    """Each identity's password, from ``path``, made (random, mode 0600) on first use."""
    known: dict[str, str] = json.loads(path.read_text()) if path.exists() else {}
    missing = [name for name in IDENTITIES if name not in known]
    if missing:
        known.update({name: secrets.token_urlsafe(32) for name in missing})
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(known, f, indent=2)
    return known


def _list(subjects: tuple[str, ...]) -> str:
    return ", ".join(json.dumps(s) for s in subjects)


def server_config(passwords: dict[str, str]) -> str:
    """The nats-server configuration of every identity with its permissions (the listen
    address and JetStream come from the command line).

    A client without credentials is refused; a publish or subscribe outside an identity's
    permissions is refused by the server (the client gets a permissions violation).
    """
    users = []
    for name, perms in IDENTITIES.items():
        users.append(
            f"    {{ user: {json.dumps(name)}, password: {json.dumps(passwords[name])},\n"
            f"      permissions: {{ publish: [{_list(perms.publish)}],\n"
            f"                     subscribe: [{_list(perms.subscribe)}] }} }}"
        )
    return "authorization {\n  users: [\n" + ",\n".join(users) + "\n  ]\n}\n"
