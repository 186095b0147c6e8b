"""Lease stores: the JetStream KV bucket every process uses (:class:`NatsLeaseStore`)
and the same contract in one process (:class:`MemoryLeaseStore`), for the framework's
unit tests. A create is atomic, a renew is a compare-and-set on the last revision."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, Protocol

__all__ = ["DEFAULT_TTL_S", "LeaseStore", "LeaseTaken", "MemoryLeaseStore", "NatsLeaseStore"]

log = logging.getLogger(__name__)

DEFAULT_TTL_S = 5.0


class LeaseTaken(Exception):
    """The key exists (create) or changed since we last wrote it (renew)."""


class LeaseStore(Protocol):
    ttl: float

    async def create(self, key: str, value: bytes) -> int: ...

    async def renew(self, key: str, value: bytes, revision: int) -> int: ...

    async def release(self, key: str, revision: int) -> None: ...

    async def put(self, key: str, value: bytes) -> int: ...

    async def delete(self, key: str) -> None: ...

    async def keys(self, pattern: str) -> list[str]: ...


class NatsLeaseStore:
    """A :class:`LeaseStore` in a JetStream KV bucket whose TTL is the lease time."""

    def __init__(self, kv: Any, ttl: float) -> None:
        self._kv, self.ttl = kv, ttl

    @classmethod
    async def open(cls, nc: Any, bucket: str, ttl: float = DEFAULT_TTL_S) -> NatsLeaseStore:
        from nats.js.errors import BucketNotFoundError

        js = nc.jetstream(timeout=2.0)
        try:
            kv = await js.key_value(bucket)
        except BucketNotFoundError:
            kv = await js.create_key_value(bucket=bucket, ttl=ttl, history=1)
        else:  # the bucket's TTL is the lease time: follow the setting if it changed
            stream = await js.stream_info(f"KV_{bucket}")
            if stream.config.max_age != ttl:
                log.warning("lease bucket %s: TTL %s s → %s s", bucket, stream.config.max_age, ttl)
                window = min(ttl, 120.0)  # JetStream: never longer than the max age
                await js.update_stream(replace(stream.config, max_age=ttl, duplicate_window=window))
        return cls(kv, ttl)

    async def create(self, key: str, value: bytes) -> int:
        from nats.js.errors import KeyWrongLastSequenceError

        try:
            return int(await self._kv.create(key, value))
        except KeyWrongLastSequenceError as exc:
            raise LeaseTaken(key) from exc

    async def renew(self, key: str, value: bytes, revision: int) -> int:
        from nats.js.errors import KeyWrongLastSequenceError

        try:
            return int(await self._kv.update(key, value, last=revision))
        except KeyWrongLastSequenceError as exc:
            raise LeaseTaken(key) from exc

    async def release(self, key: str, revision: int) -> None:
        await self._kv.delete(key, last=revision)

    async def put(self, key: str, value: bytes) -> int:
        return int(await self._kv.put(key, value))

    async def delete(self, key: str) -> None:
        await self._kv.delete(key)

    async def keys(self, pattern: str) -> list[str]:
        opening = asyncio.ensure_future(
            self._kv.watch(pattern, ignore_deletes=True, meta_only=True)
        )
        try:
            watcher = await asyncio.shield(opening)
        except asyncio.CancelledError:
            # nats-py leaves the watcher subscribed when cancelled inside ``watch()``: its
            # callback would then block on a full queue, and the connection's drain with it
            opening.add_done_callback(_stop_if_opened)
            raise
        found: list[str] = []
        try:
            while (entry := await watcher.updates(timeout=2.0)) is not None:
                found.append(entry.key)
        finally:
            await watcher.stop()
        return found


def _stop_if_opened(opening: asyncio.Future[Any]) -> None:
    if not opening.cancelled() and opening.exception() is None:
        _stopping.add(task := asyncio.ensure_future(_stop(opening.result())))
        task.add_done_callback(_stopping.discard)


async def _stop(watcher: Any) -> None:
    try:
        await watcher.stop()
    except Exception as error:  # the connection closed or is draining: it unsubscribes it
        log.debug("lease watcher left to the connection's close: %r", error)


_stopping: set[asyncio.Future[None]] = set()  # strong references until each has stopped


class MemoryLeaseStore:
    """The :class:`LeaseStore` contract in one process (framework unit tests)."""

    def __init__(self, ttl: float = DEFAULT_TTL_S, clock: Callable[[], float] = time.monotonic):
        self.ttl, self._clock = ttl, clock
        self._revision = 0
        self._entries: dict[str, tuple[int, bytes, float]] = {}

    def _live(self, key: str) -> tuple[int, bytes, float] | None:
        entry = self._entries.get(key)
        if entry is not None and self._clock() - entry[2] >= self.ttl:
            del self._entries[key]
            return None
        return entry

    def _write(self, key: str, value: bytes) -> int:
        self._revision += 1
        self._entries[key] = (self._revision, value, self._clock())
        return self._revision

    async def create(self, key: str, value: bytes) -> int:
        if self._live(key) is not None:
            raise LeaseTaken(key)
        return self._write(key, value)

    async def renew(self, key: str, value: bytes, revision: int) -> int:
        entry = self._live(key)
        if entry is None or entry[0] != revision:
            raise LeaseTaken(key)
        return self._write(key, value)

    async def release(self, key: str, revision: int) -> None:
        entry = self._live(key)
        if entry is not None and entry[0] == revision:
            del self._entries[key]

    async def put(self, key: str, value: bytes) -> int:
        return self._write(key, value)

    async def delete(self, key: str) -> None:
        self._entries.pop(key, None)

    async def keys(self, pattern: str) -> list[str]:
        from shared.bus import subject_matches

        return [k for k in list(self._entries) if self._live(k) and subject_matches(pattern, k)]
