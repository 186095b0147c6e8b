"""What every process exposes to operators: /healthz, /readyz, /metrics, request ids in logs."""

from __future__ import annotations

import asyncio
import importlib.metadata
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import Metric
from starlette.datastructures import State
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared import wire

__all__ = [
    "AnswerHook",
    "AppStateCollector",
    "HttpMetrics",
    "HttpMetricsMiddleware",
    "JsonFormatter",
    "ReadyCheck",
    "RequestIdMiddleware",
    "configure_logging",
    "install_ops_routes",
    "process_registry",
    "request_id_var",
    "when_answered",
]

ReadyCheck = Callable[[], Awaitable[object]]
READY_TIMEOUT_S = 2.0
LOOPBACK = frozenset({"127.0.0.1", "::1"})

OPS_PATHS = frozenset({"/healthz", "/readyz", "/metrics", "/ops/release"})
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

request_id_var: ContextVar[str] = ContextVar("request_id", default="-")

AnswerHook = Callable[[float, int], None]
"""Called with the seconds since the request arrived and the answer's status code."""


@dataclass
class _Request:
    started: float
    hooks: list[AnswerHook] = field(default_factory=list)


_request_var: ContextVar[_Request | None] = ContextVar("http_request", default=None)


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get()
        return True


_SECRET_PARAM = re.compile(r"([?&]csrf=)[^&\s\"']+")


class _RedactFilter(logging.Filter):
    """Secrets in a logged URL become ``…``: uvicorn logs every socket's path with its
    query, and the page's socket carries the session's CSRF token there (``/ws?csrf=``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "csrf=" in message:
            record.msg, record.args = _SECRET_PARAM.sub(r"\1…", message), None
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


class AppStateCollector:
    """The series of the parts an app's lifespan builds, read at scrape time from its
    ``state``: the database engine's pool (``db_pool_*``), the NATS bus (``nats_*``), the
    outbox relay (``outbox_*``) and the orders venue (``orders_*``), each of which is a
    Prometheus collector itself; a part that is absent or not one (an in-memory bus, a
    pool without metrics) exports nothing."""

    PARTS = ("bus", "outbox", "venue")

    def __init__(self, state: State) -> None:
        self._state = state

    def collect(self) -> Iterator[Metric]:
        engine = getattr(self._state, "engine", None)
        parts = [
            getattr(engine, "pool", None),
            *(getattr(self._state, n, None) for n in self.PARTS),
        ]
        for part in parts:
            collect = getattr(part, "collect", None)
            if callable(collect):
                yield from collect()


class HttpMetrics:
    """Every process's HTTP traffic, errors and latency (ops endpoints left out)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Counter(
            "http_requests", "HTTP requests answered, by status code.", ["code"], registry=registry
        )
        self.seconds = Histogram(
            "http_request_seconds",
            "Time from a request's arrival to the start of its answer.",
            buckets=HTTP_BUCKETS,
            registry=registry,
        )

    def answered(self, request: _Request, status: int) -> None:
        seconds = time.perf_counter() - request.started
        self.requests.labels(str(status)).inc()
        self.seconds.observe(seconds)
        for hook in request.hooks:
            try:
                hook(seconds, status)
            except Exception:
                logging.getLogger(__name__).exception("answer hook failed")


class HttpMetricsMiddleware:
    """Counts and times every HTTP answer; lets the handler ask to hear when its answer
    starts (:func:`when_answered`)."""

    def __init__(self, app: ASGIApp, metrics: HttpMetrics) -> None:
        self.app, self.metrics = app, metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path") in OPS_PATHS:
            await self.app(scope, receive, send)
            return
        request = _Request(time.perf_counter())
        token = _request_var.set(request)
        answered = False

        async def send_timed(message: Message) -> None:
            nonlocal answered
            if message["type"] == "http.response.start" and not answered:
                answered = True
                self.metrics.answered(request, int(message["status"]))
            await send(message)

        try:
            await self.app(scope, receive, send_timed)
        except BaseException:
            if not answered:  # the server answers 500 for us
                answered = True
                self.metrics.answered(request, 500)
            raise
        finally:
            _request_var.reset(token)


def when_answered(hook: AnswerHook) -> bool:
    """Call ``hook(seconds, status)`` once the current HTTP request's answer starts
    (``seconds`` since the request reached this process); False outside a request."""
    request = _request_var.get()
    if request is None:
        return False
    request.hooks.append(hook)
    return True


class JsonFormatter(logging.Formatter):
    """One JSON object per record (``LOG_FORMAT=json``), for a log pipeline to index:
    time (UTC, ISO 8601), level, service, request id, logger, message and any traceback."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "request_id": getattr(record, "request_id", "-"),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")


def configure_logging(service: str, level: str = "INFO", fmt: str = "text") -> None:
    """One line per record, tagged with the service and the current request id: plain
    text, or (``fmt="json"``) one JSON object."""
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    handler.addFilter(_RedactFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(
            logging.Formatter(
                f"%(asctime)s %(levelname)s {service} [%(request_id)s] %(name)s: %(message)s"
            )
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in UVICORN_LOGGERS:
        # uvicorn set up its own loggers at INFO, each with its own handler: they log
        # every socket opened and closed whatever LOG_LEVEL says, and in their own format
        uvicorn_log = logging.getLogger(name)
        uvicorn_log.handlers[:] = []
        uvicorn_log.setLevel(logging.NOTSET)
        uvicorn_log.propagate = True


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
    with ``release``, ``POST /ops/release`` (from the pod itself only: a preStop hook, on
    the loopback address with ``X-Ops-Release: 1`` and no ``Origin``, which a web page
    open on a developer's machine cannot send)
    gives the process's leases back before it is stopped. ``registry`` gains the HTTP
    series of every request (:class:`HttpMetrics`) and those of the app's database pool,
    NATS connection and outbox (:class:`AppStateCollector`).

    A failing check in ``degraded_only`` (NATS: pages, fragments and events need only
    PostgreSQL, and the live path says "delayed" by itself) is reported but keeps the
    process ready, so a NATS blip does not take every pod out of its Service at once.
    """

    registry.register(AppStateCollector(app.state))
    app.add_middleware(HttpMetricsMiddleware, metrics=HttpMetrics(registry))

    if release is not None:

        @app.post("/ops/release", include_in_schema=False)
        async def ops_release(request: Request) -> Response:
            client = request.client.host if request.client else ""
            headers = request.headers
            if (
                client not in LOOPBACK
                or "origin" in headers  # a browser's request, whatever page sent it
                or headers.get(wire.HEADER_OPS_RELEASE) != "1"
            ):
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
