"""The message bus port: NATS in production, in memory for unit tests.

Both speak JSON dicts; subjects use NATS wildcards (``*`` one token, ``>`` the rest).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol

import orjson
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from shared import wire
from shared.observability import request_id_var

__all__ = [
    "BusStats",
    "Handler",
    "InMemoryBus",
    "MessageBus",
    "NatsBus",
    "Subscription",
    "decode",
    "encode",
    "subject_matches",
]

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 5  # how long a closing connection handles what it already received

DURABLE_TIMEOUT_S = 2.0  # a JetStream publish not acknowledged by then failed
DEDUP_WINDOW_S = 120.0  # a resend with the same Nats-Msg-Id within this is stored once
SLOW_CONSUMER_LOG_S = 10.0  # nats-py reports every dropped message: log at most this often

Handler = Callable[[str, dict[str, Any]], Awaitable[None]]


def _default(value: object) -> object:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def encode(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload, default=_default, option=orjson.OPT_NON_STR_KEYS)


def decode(data: bytes) -> dict[str, Any]:
    value = orjson.loads(data)
    if not isinstance(value, dict):
        raise ValueError("message payload is not a JSON object")
    return value


def subject_matches(pattern: str, subject: str) -> bool:
    p_tokens, s_tokens = pattern.split("."), subject.split(".")
    for i, token in enumerate(p_tokens):
        if token == ">":
            return len(s_tokens) > i
        if i >= len(s_tokens) or (token != "*" and token != s_tokens[i]):
            return False
    return len(p_tokens) == len(s_tokens)


class Subscription(Protocol):
    async def unsubscribe(self) -> None: ...


class MessageBus(Protocol):
    async def publish(self, subject: str, payload: dict[str, Any]) -> None: ...

    async def publish_durable(self, subject: str, payload: dict[str, Any], msg_id: str) -> None:
        """Publish into the JetStream stream that captures ``subject`` and return once the
        server has stored it (raise otherwise); ``msg_id`` de-duplicates a resend."""
        ...

    async def subscribe(self, subject: str, handler: Handler) -> Subscription: ...

    async def flush(self) -> None: ...

    async def close(self) -> None: ...

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None: ...

    @property
    def is_connected(self) -> bool: ...


async def _call(handler: Handler, subject: str, payload: dict[str, Any]) -> None:
    try:
        await handler(subject, payload)
    except Exception:
        log.exception("handler for %s failed", subject)


@dataclass
class BusStats:
    """What a NATS connection went through since it was opened."""

    disconnects: int = 0
    reconnects: int = 0
    errors: int = 0  # reported by the client, slow consumers not included
    slow_consumer_drops: int = 0  # messages the client dropped: a subscriber fell behind


class NatsBus:
    """A :class:`MessageBus` over a nats.py connection.

    It counts disconnects, reconnects, errors and slow-consumer drops in :attr:`stats`
    and is a Prometheus collector of them and of the connection state (``nats_*``): an
    app's ``/metrics`` reads its bus (:func:`shared.observability.install_ops_routes`);
    a bus outside an app is exported with ``registry.register(bus)``.
    """

    def __init__(self, nc: Any) -> None:
        self._nc = nc
        self._on_reconnect: list[Callable[[], Awaitable[None]]] = []
        self.stats = BusStats()
        self._closing = False
        self._slow_logged_at = -SLOW_CONSUMER_LOG_S

    @classmethod
    async def connect(cls, url: str, name: str = "", **options: Any) -> NatsBus:
        """Connect (and keep reconnecting forever); ``options`` carry the identity and
        TLS (:meth:`ServiceSettings.nats_options`)."""
        import nats

        bus = cls(None)
        bus._nc = await nats.connect(
            url,
            name=name or None,
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            # closing waits for the messages already received to be handled, at most this
            # long (nats-py's 30 s outlasts a platform's stop grace period)
            drain_timeout=DRAIN_TIMEOUT_S,
            disconnected_cb=bus._disconnected,
            reconnected_cb=bus._reconnected,
            error_cb=bus._error,
            **options,
        )
        return bus

    async def _error(self, exc: Exception) -> None:
        from nats.errors import SlowConsumerError

        if isinstance(exc, SlowConsumerError):
            self.stats.slow_consumer_drops += 1
            now = time.monotonic()
            if now - self._slow_logged_at >= SLOW_CONSUMER_LOG_S:
                self._slow_logged_at = now
                log.warning("NATS: slow consumer on %s, messages dropped", exc.subject)
            return
        self.stats.errors += 1
        # e.g. "Permissions Violation for Publish to ...": the server refused a subject
        log.error("NATS: %s", exc)

    async def _disconnected(self) -> None:
        if not self._closing:
            self.stats.disconnects += 1
            log.warning("NATS connection lost; reconnecting")

    def collect(self) -> Iterator[Metric]:
        """The connection's series (the Prometheus collector protocol)."""
        yield GaugeMetricFamily(
            "nats_connected", "1 while the NATS connection is up.", value=int(self.is_connected)
        )
        for name, doc, value in (
            ("nats_disconnects", "NATS connections lost.", self.stats.disconnects),
            ("nats_reconnects", "NATS connections re-established.", self.stats.reconnects),
            ("nats_errors", "Errors the NATS client reported.", self.stats.errors),
            (
                "nats_slow_consumer_drops",
                "Messages the NATS client dropped because a subscriber fell behind.",
                self.stats.slow_consumer_drops,
            ),
        ):
            yield CounterMetricFamily(name, doc, value=value)

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Call ``callback`` after each reconnection: messages published while the
        connection was down are gone, so whoever depends on them re-synchronises."""
        self._on_reconnect.append(callback)

    async def _reconnected(self) -> None:
        self.stats.reconnects += 1
        log.warning("NATS connection re-established; re-synchronising")
        for callback in list(self._on_reconnect):
            try:
                await callback()
            except Exception:
                log.exception("reconnect callback failed")

    @property
    def client(self) -> Any:
        return self._nc

    @property
    def is_connected(self) -> bool:
        return self._nc is not None and bool(self._nc.is_connected)

    async def publish(self, subject: str, payload: dict[str, Any]) -> None:
        # the request being served travels with what it causes (a tick carries none)
        rid = request_id_var.get()
        if rid == "-":
            await self._nc.publish(subject, encode(payload))
        else:
            await self._nc.publish(subject, encode(payload), headers={wire.HEADER_REQUEST_ID: rid})

    async def publish_durable(self, subject: str, payload: dict[str, Any], msg_id: str) -> None:
        js = self._nc.jetstream(timeout=DURABLE_TIMEOUT_S)
        headers = {"Nats-Msg-Id": msg_id}
        rid = request_id_var.get()
        if rid != "-":
            headers[wire.HEADER_REQUEST_ID] = rid
        await js.publish(subject, encode(payload), headers=headers)

    async def ensure_stream(self, name: str, subjects: list[str], max_age_s: float) -> None:
        """Create the stream unless it exists (every replica may try; the first wins)."""
        from nats.js.api import StreamConfig
        from nats.js.errors import BadRequestError, NotFoundError

        js = self._nc.jetstream(timeout=DURABLE_TIMEOUT_S)
        try:
            await js.stream_info(name)
            return
        except NotFoundError:
            pass
        config = StreamConfig(
            name=name, subjects=subjects, max_age=max_age_s, duplicate_window=DEDUP_WINDOW_S
        )
        with contextlib.suppress(BadRequestError):  # created meanwhile by another replica
            await js.add_stream(config)

    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        async def on_msg(msg: Any) -> None:
            try:
                payload = decode(msg.data)
            except ValueError:
                log.warning("dropping undecodable message on %s", msg.subject)
                return
            rid = msg.headers.get(wire.HEADER_REQUEST_ID) if msg.headers else None
            if not rid:
                await _call(handler, msg.subject, payload)
                return
            token = request_id_var.set(str(rid)[:64])  # its logs and what it publishes
            try:
                await _call(handler, msg.subject, payload)
            finally:
                request_id_var.reset(token)

        sub: Subscription = await self._nc.subscribe(subject, cb=on_msg)
        return sub

    async def flush(self) -> None:
        await self._nc.flush()

    async def close(self) -> None:
        self._closing = True  # closing is not a lost connection
        if not self._nc.is_closed:
            await self._nc.drain()


class _MemorySubscription:
    def __init__(self, bus: InMemoryBus, pattern: str, handler: Handler) -> None:
        self._bus, self.pattern, self.handler = bus, pattern, handler

    async def unsubscribe(self) -> None:
        if self in self._bus._subs:
            self._bus._subs.remove(self)


class InMemoryBus:
    """A :class:`MessageBus` in one process; messages round-trip through JSON like NATS.

    It keeps the contract both adapters share (``tests/service/test_bus_contract.py``):
    per-subject order, ``*`` / ``>`` matching, no delivery after unsubscribe, publishing
    from a handler, JSON payloads. Unlike NATS it delivers synchronously: every matching
    handler has run (a failing one logged) when ``publish()`` returns, and a handler that
    publishes runs the next handlers before its own ``publish()`` returns. Code must not
    rely on either timing; unit tests may, as they assert right after publishing.
    """

    def __init__(self) -> None:
        self._subs: list[_MemorySubscription] = []
        self.published: list[tuple[str, dict[str, Any]]] = []
        self._on_reconnect: list[Callable[[], Awaitable[None]]] = []

    def on_reconnect(self, callback: Callable[[], Awaitable[None]]) -> None:
        self._on_reconnect.append(callback)

    async def reconnected(self) -> None:
        """What a NATS reconnection triggers (for tests)."""
        for callback in list(self._on_reconnect):
            await callback()

    @property
    def is_connected(self) -> bool:
        return True

    async def publish_durable(self, subject: str, payload: dict[str, Any], msg_id: str) -> None:
        await self.publish(subject, payload)

    async def publish(self, subject: str, payload: dict[str, Any]) -> None:
        wire = decode(encode(payload))
        self.published.append((subject, wire))
        for sub in list(self._subs):
            if subject_matches(sub.pattern, subject):
                await _call(sub.handler, subject, decode(encode(payload)))

    async def subscribe(self, subject: str, handler: Handler) -> Subscription:
        sub = _MemorySubscription(self, subject, handler)
        self._subs.append(sub)
        return sub

    async def flush(self) -> None:
        await asyncio.sleep(0)

    async def close(self) -> None:
        self._subs.clear()
