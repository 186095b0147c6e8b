"""Test helpers for the gateway: real servers on free ports, stand-in services, logging in."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response

from shared import wire
from shared.devservers import free_port
from shared.identity import Identity, InvalidIdentity, verify_identity
from shared.settings import DEV_PLACEHOLDER_SECRET

__all__ = ["Served", "StandIn", "csrf_of_page", "login"]

_FORM_TOKEN = re.compile(r'name="csrf_token" value="([^"]+)"')
_META_TOKEN = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


class Served:
    """An ASGI app served by a real uvicorn in a thread (its own event loop), on a free port."""

    def __init__(self, app: Any, port: int | None = None, **config: Any) -> None:
        self.port = port or free_port()
        options: dict[str, Any] = {"log_level": "warning", "lifespan": "on", **config}
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, **options)
        )
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def start(self, timeout: float = 15.0) -> Served:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"server on :{self.port} did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self._thread.join(15)

    async def __aenter__(self) -> Served:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.stop)


@dataclass
class StandIn:
    """A component service that answers ``GET /components/{name}`` and events, and records calls.

    ``delay_s`` slows every answer; ``event_status`` / ``event_headers`` shape event answers;
    ``html``, when set, is what it answers instead of its own root element (as a compromised
    or broken service could).
    """

    name: str
    delay_s: float = 0.0
    event_status: int = 200
    event_headers: dict[str, str] = field(default_factory=dict)
    html: str | None = None
    secret: str = DEV_PLACEHOLDER_SECRET
    calls: list[dict[str, Any]] = field(default_factory=list)

    def fragment(self) -> str:
        if self.html is not None:
            return self.html
        root = wire.element_id(self.name, "root")
        return f'<div id="{root}" data-component="{self.name}">{self.name} fragment</div>'

    def _identity(self, request: Request) -> Identity | None:
        try:
            return verify_identity(request.headers.get(wire.HEADER_IDENTITY), self.secret)
        except InvalidIdentity:
            return None

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/healthz")
        async def healthz() -> dict[str, str]:
            return {"status": "ok", "service": self.name}

        @app.get("/components/{name}")
        async def get_fragment(request: Request, name: str) -> Response:
            identity = self._identity(request)
            self.calls.append({"kind": "fragment", "name": name, "identity": identity})
            await asyncio.sleep(self.delay_s)
            if identity is None:
                return Response(status_code=401)
            return HTMLResponse(self.fragment())

        @app.post("/components/{name}/events/{event}")
        async def post_event(request: Request, name: str, event: str) -> Response:
            identity = self._identity(request)
            self.calls.append(
                {
                    "kind": "event",
                    "name": name,
                    "event": event,
                    "identity": identity,
                    "body": await request.body(),
                    "request_id": request.headers.get(wire.HEADER_REQUEST_ID),
                }
            )
            await asyncio.sleep(self.delay_s)
            if identity is None:
                return Response(status_code=401)
            html = self.html or (
                f'<div id="{wire.element_id(self.name, "root")}">{event} {self.event_status}</div>'
            )
            return HTMLResponse(html, self.event_status, headers=self.event_headers)

        return app


async def login(client: httpx.AsyncClient, username: str, password: str) -> httpx.Response:
    """Log in through the form (with its CSRF token) and return the POST's response."""
    form = await client.get("/login")
    match = _FORM_TOKEN.search(form.text)
    assert match, "login form has no csrf_token"
    return await client.post(
        "/login", data={"username": username, "password": password, "csrf_token": match[1]}
    )


def csrf_of_page(html: str) -> str:
    match = _META_TOKEN.search(html)
    assert match, "page has no csrf-token meta"
    return match[1]
