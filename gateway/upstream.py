"""Calling the component services: their URLs, the identity and trace headers."""

from __future__ import annotations

import uuid

import httpx

from gateway.sessions import SessionUser
from gateway.state import Gateway
from shared import wire
from shared.identity import sign_identity
from shared.observability import request_id_var

__all__ = ["component_url", "event_url", "open_client", "upstream_headers"]


def open_client(transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """The one pooled client every fragment and event goes through."""
    return httpx.AsyncClient(
        transport=transport,
        limits=httpx.Limits(max_connections=500, max_keepalive_connections=100),
        timeout=httpx.Timeout(5.0),
        follow_redirects=False,
    )


def upstream_headers(g: Gateway, user: SessionUser) -> dict[str, str]:
    rid = request_id_var.get()
    return {
        wire.HEADER_IDENTITY: sign_identity(user.identity, g.identity_secret()),
        wire.HEADER_REQUEST_ID: rid if rid != "-" else uuid.uuid4().hex,
    }


def component_url(g: Gateway, component: str) -> str | None:
    base = g.service_url(component)
    return f"{base.rstrip('/')}/components/{component}" if base else None


def event_url(g: Gateway, component: str, event: str) -> str | None:
    base = component_url(g, component)
    return f"{base}/events/{event}" if base else None
