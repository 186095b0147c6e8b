"""Security headers on every HTTP response, the WebSocket Origin policy, cached static files."""

from __future__ import annotations

import hashlib
from pathlib import Path

from starlette.datastructures import Headers
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "SECURITY_HEADERS",
    "CachedStaticFiles",
    "SecurityHeadersMiddleware",
    "origin_allowed",
]

# connect-src 'self' covers ws:/wss: to the same host (CSP Level 3, every current browser).
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; "
    "object-src 'none'"
)
SECURITY_HEADERS: dict[str, str] = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    # the page needs none of the browser's powerful features
    "Permissions-Policy": (
        "camera=(), microphone=(), geolocation=(), payment=(), usb=(), serial=(), "
        "bluetooth=(), hid=(), midi=(), display-capture=(), clipboard-read=()"
    ),
}
_HSTS = (b"strict-transport-security", b"max-age=31536000")


class SecurityHeadersMiddleware:
    """Adds :data:`SECURITY_HEADERS` (and HSTS over https) unless a response set its own."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._headers = [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self._headers + ([_HSTS] if scope.get("scheme") == "https" else [])

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in extra if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_headers)


def origin_allowed(headers: Headers, allowed: list[str]) -> bool:
    """Whether a WebSocket handshake's Origin may connect.

    With no allowlist only the gateway's own origin (the Host it was reached at) is allowed.
    A handshake without an Origin is refused: every browser sends one.
    """
    origin = headers.get("origin")
    if not origin:
        return False
    origin = origin.rstrip("/").lower()
    if allowed:
        return origin in {o.rstrip("/").lower() for o in allowed}
    host = headers.get("host", "").lower()
    return bool(host) and origin in (f"http://{host}", f"https://{host}")


class CachedStaticFiles(StaticFiles):
    """Static files cached for a year; pages link them with a content hash (``?v=``)."""

    CACHE_CONTROL = "public, max-age=31536000, immutable"

    def __init__(self, directory: Path) -> None:
        super().__init__(directory=directory)
        self._root = directory
        self._versions: dict[str, str] = {}

    def url(self, path: str) -> str:
        """``/static/<path>?v=<hash of its content>``, so a changed file is a new URL."""
        version = self._versions.get(path)
        if version is None:
            digest = hashlib.sha256((self._root / path).read_bytes()).hexdigest()
            version = self._versions[path] = digest[:12]
        return f"/static/{path}?v={version}"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_cached(message: Message) -> None:
            if message["type"] == "http.response.start" and message.get("status") in (200, 304):
                message["headers"] = [
                    *message.get("headers", []),
                    (b"cache-control", self.CACHE_CONTROL.encode()),
                ]
            await send(message)

        await super().__call__(scope, receive, send_cached)
