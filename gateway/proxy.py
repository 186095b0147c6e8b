"""``POST /c/{component}/{event}``: a browser event, checked here and forwarded to its service.

Nothing is forwarded without a valid session and the session's CSRF token in ``X-CSRF-Token``.
The service's status, body and rate-limit headers come back unchanged, once the body passed
the check every live part passes (:mod:`gateway.markup`): an answer the page would swap
(2xx, 422) must be the component's own root element.
"""

from __future__ import annotations

import logging
import re

import httpx
from fastapi import APIRouter, Request
from fastapi.responses import Response

from gateway import markup
from gateway.csrf import tokens_match
from gateway.forms import read_capped
from gateway.sessions import current_user
from gateway.state import gw
from gateway.upstream import event_url, upstream_headers
from shared import wire

__all__ = ["PASSED_THROUGH", "router"]

log = logging.getLogger(__name__)
router = APIRouter()

_EVENT = re.compile(r"^[a-z_][a-z0-9_]{0,63}$")
# Response headers a service's answer keeps on its way to the browser.
PASSED_THROUGH = (
    "content-type",
    wire.HEADER_RETRY_AFTER.lower(),
    wire.HEADER_RATELIMIT.lower(),
    wire.HEADER_RATELIMIT_POLICY.lower(),
    "ratelimit-limit",
    "ratelimit-remaining",
    "ratelimit-reset",
)  # not htmx's HX-Retarget, HX-Reswap or HX-Trigger: an answer swaps where its request said
_SWAPPED = re.compile(r"[23]\d\d|422")  # what the page swaps (page.html's responseHandling)
_FORWARDED = ("content-type", "accept", "hx-request", "hx-trigger", "hx-target")


SERVICE_NAMES = {"order": "orders", "risk_metrics": "risk"}


def uncertain(component: str) -> str:
    name = SERVICE_NAMES.get(component, component)
    if component == "order":  # every order carries its client order id
        return (
            f"The {name} service did not answer in time. Retry: the order keeps its id, "
            "so it cannot be placed twice."
        )
    return f"The {name} service did not answer in time; it may not have been applied. Retry."


@router.post("/c/{component}/{event}", include_in_schema=False)
async def component_event(request: Request, component: str, event: str) -> Response:
    g = gw(request)
    url = event_url(g, component, event) if _EVENT.match(event) else None
    if url is None:
        return Response("unknown component or event", status_code=404)
    user = await current_user(request)
    if user is None:
        return Response("not logged in", status_code=401, headers={"HX-Redirect": "/login"})
    if not tokens_match(g.csrf_token(user.session_id), request.headers.get(wire.HEADER_CSRF)):
        g.metrics.events.labels(component, "csrf").inc()
        return Response("CSRF token missing or invalid", status_code=403)
    body = await read_capped(request, g.settings.max_event_body_bytes)
    if body is None:
        return Response("request body too large", status_code=413)

    headers = {k: v for k in _FORWARDED if (v := request.headers.get(k)) is not None}
    headers.update(upstream_headers(g, user))
    try:
        with g.fanout.serving():
            upstream = await g.client.post(
                url,
                content=body,
                headers=headers,
                timeout=g.settings.event_timeout_ms / 1000,
            )
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
        log.warning("event %s/%s: service unreachable: %s", component, event, exc)
        g.metrics.events.labels(component, "unreachable").inc()
        return Response(
            f"Could not reach the {SERVICE_NAMES.get(component, component)} service. "
            "Nothing was submitted; retry.",
            status_code=503,
            headers={wire.HEADER_RETRY_AFTER: "1"},
        )
    except httpx.HTTPError as exc:  # sent, but no answer: it may or may not have happened
        log.warning("event %s/%s failed: %s", component, event, exc)
        g.metrics.events.labels(component, "timeout").inc()
        return Response(uncertain(component), status_code=504)
    if upstream.content and _SWAPPED.fullmatch(str(upstream.status_code)):
        reason = markup.check(component, wire.element_id(component, "root"), upstream.text)
        if reason is not None:  # the same rules as its live parts (gateway/markup.py)
            log.warning("event %s/%s: answer refused (%s)", component, event, reason)
            g.metrics.events.labels(component, "refused").inc()
            return Response(
                f"The {SERVICE_NAMES.get(component, component)} service's answer was refused "
                "by the gateway. It may have been applied: reload before retrying.",
                status_code=502,
            )
    g.metrics.events.labels(component, str(upstream.status_code)).inc()
    kept = {k: v for k in PASSED_THROUGH if (v := upstream.headers.get(k)) is not None}
    return Response(upstream.content, status_code=upstream.status_code, headers=kept)
