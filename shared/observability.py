"""What every process exposes to operators: /healthz, /readyz, /metrics, request ids in logs."""

from __future__ import annotations

import asyncio
import importlib.metadata
import logging
import os
import uuid
from collections.abc import Awaitable, Callable, Mapping
from contextvars import ContextVar

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    GCCollector,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import wire

__all__ = [
    "ReadyCheck",
    "RequestIdMiddleware",
    "configure_logging",
    "install_ops_routes",
    "process_registry",
    "request_id_var",
]

ReadyCheck = Callable[[], Awaitable[object]]
READY_TIMEOUT_S = 2.0
LOOPBACK = frozenset({"127.0.0.1", "::1"})

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


def process_registry() -> CollectorRegistry:
    """A metrics registry with the process's own series: CPU, memory, open files (process),
    garbage collection, the Python build, and ``build_info`` (version, revision)."""
    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    info = Info("build", "The running build.", registry=registry)
    try:
        version = importlib.metadata.version("trading-dashboard")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    info.info({"version": version, "revision": os.environ.get("GIT_REVISION", "unknown")})
    return registry


def configure_logging(service: str, level: str = "INFO") -> None:
    """One line per record, tagged with the service and the current request id."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(
        logging.Formatter(
            f"%(asctime)s %(levelname)s {service} [%(request_id)s] %(name)s: %(message)s"
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class RequestIdMiddleware:
    """Takes ``X-Request-ID`` from the caller (or makes one), logs with it, echoes it back."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._header = wire.HEADER_REQUEST_ID.lower().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = dict(scope["headers"]).get(self._header, b"").decode("latin-1")
        rid = incoming[:64] if incoming else uuid.uuid4().hex
        token = request_id_var.set(rid)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (self._header, rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            request_id_var.reset(token)


def install_ops_routes(
    app: FastAPI,
    *,
    service: str,
    registry: CollectorRegistry,
    ready_checks: Mapping[str, ReadyCheck],
    release: Callable[[FastAPI], Awaitable[object]] | None = None,
    degraded_only: frozenset[str] = frozenset({"nats"}),
) -> None:
    """Add ``/healthz`` (alive), ``/readyz`` (dependencies reachable) and ``/metrics``;
    with ``release``, ``POST /ops/release`` (from the pod itself only: a preStop hook)
    gives the process's leases back before it is stopped.

    A failing check in ``degraded_only`` (NATS: pages, fragments and events need only
    PostgreSQL, and the live path says "delayed" by itself) is reported but keeps the
    process ready, so a NATS blip does not take every pod out of its Service at once.
    """

    if release is not None:

        @app.post("/ops/release", include_in_schema=False)
        async def ops_release(request: Request) -> Response:
            client = request.client.host if request.client else ""
            if client not in LOOPBACK:
                return Response("only from the pod itself", status_code=403)
            await release(request.app)
            return Response(status_code=204)

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "service": service}

    @app.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        results: dict[str, str] = {}
        for name, check in ready_checks.items():
            try:
                await asyncio.wait_for(check(), READY_TIMEOUT_S)
                results[name] = "ok"
            except Exception as exc:  # any failure means not ready; say which
                results[name] = f"error: {type(exc).__name__}: {exc}"[:200]
        ready = all(v == "ok" for k, v in results.items() if k not in degraded_only)
        whole = all(v == "ok" for v in results.values())
        state = "ready" if whole else ("degraded" if ready else "not ready")
        return JSONResponse(
            {"status": state, "service": service, "checks": results},
            status_code=200 if ready else 503,
        )

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
