"""The transactional outbox: stage a message in the transaction of the change it announces;
a relay publishes committed messages and marks them published.

A rolled-back change publishes nothing; a NATS outage or a crash after commit delays the
message, never loses it. A row is marked published only once JetStream has acknowledged
storing it (``publish_durable``, with the row id as ``Nats-Msg-Id``), so a crash at any
moment leaves the row to be sent again or has it stored in the stream exactly once (the
stream drops a resend within its de-duplication window). Live subscribers may still see a
resend, so consumers treat messages as "reload", which is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import bindparam, delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from shared import wire
from shared.bus import MessageBus, decode, encode
from shared.db.models import OutboxMessage
from shared.observability import request_id_var

__all__ = ["OutboxRelay", "stage", "staged"]

log = logging.getLogger(__name__)

KEEP_PUBLISHED = timedelta(hours=1)
STREAM_MAX_AGE_S = 24 * 3600.0  # the order events stream keeps a day
STOP_TIMEOUT_S = 5.0
BACKLOG_INTERVAL_S = 1.0  # the backlog is counted at most this often

# a relay's statements, built once (a round follows every order's commit)
_PENDING = (
    select(OutboxMessage)
    .where(OutboxMessage.published_at.is_(None))
    .order_by(OutboxMessage.id)
    .limit(bindparam("batch"))
    .with_for_update(skip_locked=True)
)
_PUBLISHED = (
    update(OutboxMessage)
    .where(OutboxMessage.id.in_(bindparam("ids", expanding=True)))
    .values(published_at=bindparam("at"))
    .execution_options(synchronize_session=False)  # the session ends with the round
)


def staged(subject: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The outbox row's values for ``payload`` on ``subject``, with the id of the request
    being served (published with it, so one order can be followed from the click to the
    fill to the socket)."""
    rid = request_id_var.get()
    return {
        "subject": subject,
        "payload": decode(encode(payload)),
        "request_id": None if rid == "-" else rid[:64],
    }


def stage(session: AsyncSession, subject: str, payload: dict[str, Any]) -> None:
    """Add ``payload`` for ``subject`` to the current transaction's outbox (:func:`staged`)."""
    session.add(OutboxMessage(**staged(subject, payload)))


class OutboxRelay:
    """Publishes committed outbox messages in id order; several relays may run at once
    (each message is taken by one of them: ``FOR UPDATE SKIP LOCKED``).

    The loop also counts what is still unsent (:meth:`measure`), also while NATS is
    away; the relay is a Prometheus collector of that (``outbox_*``).
    """

    def __init__(
        self,
        sessions: Callable[[], async_sessionmaker[AsyncSession] | None],
        bus: Callable[[], MessageBus | None],
        *,
        interval_s: float = 1.0,
        batch: int = 200,
        stream: tuple[str, list[str]] = (wire.ORDER_EVENTS_STREAM, [wire.ORDERS_EVENTS_ALL]),
    ) -> None:
        self._sessions, self._bus = sessions, bus
        self.interval_s, self.batch = interval_s, batch
        self.stream = stream
        self._stream_ready = False
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.backlog = 0  # unsent messages when last measured
        self.oldest_unsent_at: datetime | None = None
        self.published = self.failures = 0
        self._measured_at = -BACKLOG_INTERVAL_S

    def wake(self) -> None:
        """Publish soon (called after a commit that staged messages)."""
        self._wake.set()

    async def relay_once(self) -> int:
        """Publish what is pending; the number of messages published."""
        sessions, bus = self._sessions(), self._bus()
        if sessions is None or bus is None:
            return 0
        if not self._stream_ready:
            ensure = getattr(bus, "ensure_stream", None)
            if ensure is not None:
                await ensure(*self.stream, STREAM_MAX_AGE_S)
            self._stream_ready = True
        async with sessions() as session, session.begin():
            pending = (await session.scalars(_PENDING, {"batch": self.batch})).all()
            acked: list[int] = []
            failure: Exception | None = None
            for message in pending:
                token = request_id_var.set(message.request_id or "-")
                try:
                    await bus.publish_durable(
                        message.subject, message.payload, f"outbox-{message.id}"
                    )
                except Exception as exc:  # not stored: this and the rest stay pending
                    failure = exc
                    break
                finally:
                    request_id_var.reset(token)
                acked.append(message.id)
            if acked:
                await session.execute(_PUBLISHED, {"ids": acked, "at": datetime.now(UTC)})
        self.published += len(acked)
        if failure is not None:
            raise failure
        return len(acked)

    async def measure(self) -> None:
        """Count the unsent messages and note when the oldest was staged."""
        sessions = self._sessions()
        if sessions is None:
            return
        pending = OutboxMessage.published_at.is_(None)
        async with sessions() as session:
            count, oldest = (
                await session.execute(
                    select(func.count(OutboxMessage.id), func.min(OutboxMessage.created_at)).where(
                        pending
                    )
                )
            ).one()
        self.backlog, self.oldest_unsent_at = int(count), oldest

    def collect(self) -> Iterator[Metric]:
        """The relay's series (the Prometheus collector protocol)."""
        age = 0.0
        if self.backlog and self.oldest_unsent_at is not None:
            age = max((datetime.now(UTC) - self.oldest_unsent_at).total_seconds(), 0.0)
        yield GaugeMetricFamily(
            "outbox_backlog", "Outbox messages committed but not yet sent.", value=self.backlog
        )
        yield GaugeMetricFamily(
            "outbox_oldest_unsent_age_seconds",
            "Age of the oldest unsent outbox message (0 when none).",
            value=age,
        )
        yield CounterMetricFamily(
            "outbox_published", "Outbox messages stored by JetStream.", value=self.published
        )
        yield CounterMetricFamily(
            "outbox_relay_failures", "Relay rounds that failed (retried).", value=self.failures
        )

    async def prune(self) -> None:
        sessions = self._sessions()
        if sessions is None:
            return
        async with sessions() as session, session.begin():
            await session.execute(
                delete(OutboxMessage).where(
                    OutboxMessage.published_at < datetime.now(UTC) - KEEP_PUBLISHED
                )
            )

    async def run(self) -> None:
        rounds = 0
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval_s):
                    await self._wake.wait()
            self._wake.clear()
            try:
                while await self.relay_once() == self.batch:
                    pass  # a backlog: keep going
                rounds += 1
                if rounds % 600 == 0:
                    await self.prune()
            except Exception:  # the bus or the database is away: keep the rows, retry
                self.failures += 1
                log.exception("outbox relay failed; retrying in %.1fs", self.interval_s)
            await self._measure_now_and_then()
        # stop() may have come while a round ran: what was staged meanwhile goes out too
        with contextlib.suppress(Exception):  # else the next process's relay sends it
            while await self.relay_once() == self.batch:
                pass

    async def _measure_now_and_then(self) -> None:
        now = time.monotonic()
        if now - self._measured_at < BACKLOG_INTERVAL_S:
            return
        self._measured_at = now
        try:
            await self.measure()
        except Exception as exc:  # the database is away: the last count stands
            log.debug("outbox backlog not measured: %s", exc)

    def start(self) -> None:
        self._task = asyncio.create_task(self.run())

    async def stop(self) -> None:
        """Let the loop publish what is pending and end (it is not cancelled mid-publish)."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), STOP_TIMEOUT_S)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
