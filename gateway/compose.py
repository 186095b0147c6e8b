"""The dashboard page, composed from the four component fragments fetched concurrently.

A fragment that fails or times out becomes a placeholder that fetches itself again through
``GET /fragments/{component}`` every 2 s until its service answers (the page's one polling
exception; a live full render over the socket replaces it too, as it carries the root's id).
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup, escape

from gateway import markup
from gateway.sessions import SessionUser, current_user
from gateway.state import Gateway, gw
from gateway.upstream import component_url, upstream_headers
from shared import wire

__all__ = ["fetch_fragment", "router", "unavailable"]

log = logging.getLogger(__name__)
router = APIRouter()

LABELS = {
    "portfolio": "Portfolio",
    "watchlist": "Watchlist",
    "order": "Order entry",
    "risk_metrics": "Risk metrics",
}
NO_STORE = {"Cache-Control": "no-store"}


def unavailable(component: str, *, retry: bool = True) -> Markup:
    """The stand-in for a fragment that could not be fetched."""
    root = escape(wire.element_id(component, "root"))
    name = escape(component)
    label = escape(LABELS.get(component, component))
    if not retry:  # not an outage: this login may not use the panel (a view-only trader)
        return Markup(
            f'<section id="{root}" class="panel panel--read-only" data-component="{name}">'
            f'<h2 class="panel__title">{label}</h2>'
            f'<p class="read-only-note">{label} is not available for this account: it is '
            "view-only. Prices, positions and risk stay live.</p></section>"
        )
    return Markup(
        f'<div id="{root}" class="fragment-unavailable" data-component="{name}" role="status" '
        f'hx-get="/fragments/{name}" hx-trigger="load delay:2s" hx-swap="outerHTML">'
        f"{label} unavailable, retrying…</div>"
    )


async def fetch_fragment(g: Gateway, user: SessionUser, component: str) -> Markup:
    """The component's rendered fragment, or :func:`unavailable` within the fragment timeout."""
    url = component_url(g, component)
    assert url is not None
    timeout = g.settings.fragment_timeout_ms / 1000
    started = time.perf_counter()
    outcome = "ok"
    try:
        async with asyncio.timeout(timeout):
            with g.fanout.serving():
                response = await g.client.get(
                    url, headers=upstream_headers(g, user), timeout=timeout
                )
    except (TimeoutError, httpx.TimeoutException):
        outcome = "timeout"
    except httpx.HTTPError as exc:
        outcome = "error"
        log.warning("fragment %s failed: %s", component, exc)
    finally:
        g.metrics.fragment_seconds.labels(component).observe(time.perf_counter() - started)
    if outcome == "ok" and response.status_code != 200:
        outcome = f"http_{response.status_code}"
    if outcome == "ok":
        reason = markup.check(component, wire.element_id(component, "root"), response.text)
        if reason is not None:  # the same rules as its live parts (gateway/markup.py)
            log.warning("fragment %s refused (%s)", component, reason)
            outcome = "refused"
    g.metrics.fragments.labels(component, outcome).inc()
    if outcome == "ok":
        return Markup(response.text)
    if outcome in ("http_401", "http_403"):
        return unavailable(component, retry=False)
    return unavailable(component)


@router.get("/", include_in_schema=False)
async def page(request: Request) -> Response:
    user = await current_user(request)
    if user is None:
        return RedirectResponse("/login", status_code=303)
    g = gw(request)
    fragments = await asyncio.gather(*(fetch_fragment(g, user, c) for c in wire.COMPONENTS))
    context = {
        "user": user,
        "csrf_token": g.csrf_token(user.session_id),
        "fragments": dict(zip(wire.COMPONENTS, fragments, strict=True)),
        "root_ids": {c: wire.element_id(c, "root") for c in wire.COMPONENTS},
    }
    return g.templates.TemplateResponse(request, "page.html", context, headers=NO_STORE)


@router.get("/fragments/{component}", include_in_schema=False)
async def fragment(request: Request, component: str) -> Response:
    if component not in wire.COMPONENTS:
        return Response("unknown component", status_code=404)
    user = await current_user(request)
    if user is None:
        return Response("not logged in", status_code=401, headers={"HX-Redirect": "/login"})
    return HTMLResponse(await fetch_fragment(gw(request), user, component), headers=NO_STORE)
