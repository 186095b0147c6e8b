"""Lease holders: taking, renewing and releasing keys in a lease store, and stopping
in time (self-fencing). :class:`PartitionLeases` spreads the live partitions
over a service's replicas by rendezvous hashing; :class:`LeaderLease` is one key, one
owner."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import secrets
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

from shared import wire
from shared.leases.stores import LeaseStore, LeaseTaken

__all__ = [
    "LeaderLease",
    "Lease",
    "LeaseHolder",
    "PartitionLeases",
    "default_replica_id",
    "rendezvous_owner",
]

log = logging.getLogger(__name__)

Changed = Callable[[set[int]], Awaitable[None]]


def default_replica_id() -> str:
    """``REPLICA_ID`` (a pod's name), else host, process id and a random token (two
    replicas in one test process are two members)."""
    return os.environ.get("REPLICA_ID") or (
        f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
    )


def _key_token(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in text)


def rendezvous_owner(partition: int, members: Iterable[str]) -> str | None:
    """The member with the highest score for ``partition`` (highest random weight)."""

    def score(member: str) -> bytes:
        return hashlib.blake2b(f"{member}/{partition}".encode(), digest_size=8).digest()

    return max(members, key=score, default=None)


@dataclass
class Lease:
    """One key held: its epoch (the create's revision), last revision, last renewal."""

    key: str
    epoch: int
    revision: int
    renewed_at: float

    def valid(self, now: float, ttl: float, margin: float) -> bool:
        """Whether the holder may still act: its last renewal was sent less than
        ``ttl - margin`` ago, so nobody else can hold the key yet."""
        return now - self.renewed_at < ttl - margin


class LeaseHolder(ABC):
    """Shared by both kinds of lease: take, renew, release keys; stop acting in time."""

    def __init__(
        self,
        store: LeaseStore,
        replica: str,
        *,
        renew_every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.replica = store, replica
        self.renew_every = renew_every if renew_every is not None else store.ttl / 4
        self.margin = self.renew_every
        self._clock = clock
        self.held: dict[str, Lease] = {}
        self._task: asyncio.Task[None] | None = None
        self._draining = False
        self._wake = asyncio.Event()

    def _valid(self, key: str) -> Lease | None:
        lease = self.held.get(key)
        if lease is None or not lease.valid(self._clock(), self.store.ttl, self.margin):
            return None
        return lease

    async def _take(self, key: str) -> Lease | None:
        sent = self._clock()
        try:
            revision = await self.store.create(key, self.replica.encode())
        except LeaseTaken:
            return None
        lease = self.held[key] = Lease(key, revision, revision, sent)
        return lease

    async def _renew(self, lease: Lease) -> bool:
        sent = self._clock()
        try:
            lease.revision = await self.store.renew(
                lease.key, self.replica.encode(), lease.revision
            )
        except LeaseTaken:
            self.held.pop(lease.key, None)
            return False
        lease.renewed_at = sent
        return True

    async def _release(self, key: str) -> None:
        lease = self.held.pop(key, None)
        if lease is not None:
            with contextlib.suppress(Exception):
                await self.store.release(key, lease.revision)

    @abstractmethod
    async def round(self) -> None:
        """One renewal round: take, renew and release what this holder should."""

    async def _forever(self) -> None:
        while True:
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.renew_every)
            try:
                await self.round()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # NATS down: leases lapse by themselves (self-fencing)
                log.warning("lease round failed: %s", exc)
                await self._expire()

    @abstractmethod
    async def _expire(self) -> None:
        """Forget leases that are no longer safe to act on."""

    def poke(self) -> None:
        """Run the next round now (a member left or joined)."""
        self._wake.set()

    async def start(self) -> None:
        """Take what this replica should hold now, then keep renewing in the background."""
        if self._task is not None:
            return
        self._draining = False
        try:
            await self.round()
        except Exception as exc:
            log.warning("first lease round failed: %s", exc)
        self._task = asyncio.create_task(self._forever())

    async def stop(self, *, release: bool = True) -> None:
        """Stop renewing; with ``release``, give every lease back (a clean shutdown) so a
        survivor takes over within one round instead of one TTL."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if release:
            await self.drain()

    async def drain(self) -> None:
        """Release everything and take nothing more (a pod about to stop)."""
        self._draining = True
        for key in list(self.held):
            await self._release(key)
        await self._left()

    @abstractmethod
    async def _left(self) -> None:
        """Called once everything was released."""


class PartitionLeases(LeaseHolder):
    """This replica's share of one service's live partitions.

    ``on_gained`` / ``on_lost`` are called with the partitions that changed hands (lost
    includes those that lapsed unrenewed); :meth:`owns` and :meth:`epoch` are what the
    publisher and the session router ask.
    """

    def __init__(
        self,
        store: LeaseStore,
        replica: str | None = None,
        *,
        partitions: int = wire.LIVE_PARTITIONS,
        on_gained: Changed | None = None,
        on_lost: Changed | None = None,
        renew_every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(
            store, _key_token(replica or default_replica_id()), renew_every=renew_every, clock=clock
        )
        self.partitions = partitions
        self.on_gained, self.on_lost = on_gained, on_lost
        self.members: list[str] = []
        self._owned: set[int] = set()

    @staticmethod
    def key(partition: int) -> str:
        return f"p.{partition}"

    def owns(self, partition: int) -> bool:
        return partition in self._owned and self._valid(self.key(partition)) is not None

    def epoch(self, partition: int) -> int:
        lease = self.held.get(self.key(partition))
        return lease.epoch if lease is not None else 0

    @property
    def owned(self) -> frozenset[int]:
        return frozenset(p for p in self._owned if self.owns(p))

    async def round(self) -> None:
        store = self.store
        if self._draining:
            return
        await store.put(f"m.{self.replica}", b"1")
        listed = {k[2:] for k in await store.keys("m.*")}
        if self.replica not in listed:
            # just written, so listed: JetStream's KV watch can end before delivering what
            # it found when this process's event loop is busy (nats-py checks the
            # consumer's pending count before it has read the messages already sent).
            # Wanting nothing, this replica would hand every partition over, and take them
            # back next round: a full render for every page. Another member missing from
            # the list only makes this replica want partitions it cannot take.
            log.info("lease round: own membership not listed yet; counted anyway")
            listed.add(self.replica)
        members = sorted(listed)
        self.members = members
        wanted = {p for p in range(self.partitions) if rendezvous_owner(p, members) == self.replica}
        lost: set[int] = set()
        for p in sorted(self._owned - wanted):  # hand over to the member that wants it
            await self._release(self.key(p))
            lost.add(p)
        renewals = [self.held[self.key(p)] for p in self._owned & wanted]
        results = await asyncio.gather(*(self._renew(lease) for lease in renewals))
        lost |= {int(lease.key[2:]) for lease, ok in zip(renewals, results, strict=True) if not ok}
        missing = sorted(wanted - self._owned)
        taken = await asyncio.gather(*(self._take(self.key(p)) for p in missing))
        gained = {p for p, lease in zip(missing, taken, strict=True) if lease is not None}
        self._owned = (self._owned - lost) | gained
        await self._notify(gained, lost)

    async def _notify(self, gained: set[int], lost: set[int]) -> None:
        if lost and self.on_lost is not None:
            await self.on_lost(lost)
        if gained and self.on_gained is not None:
            await self.on_gained(gained)

    async def _expire(self) -> None:
        lapsed = {p for p in self._owned if not self.owns(p)}
        for p in lapsed:
            self.held.pop(self.key(p), None)
        self._owned -= lapsed
        await self._notify(set(), lapsed)

    async def drain(self) -> None:
        lost = set(self._owned)
        self._owned.clear()
        await super().drain()
        await self._notify(set(), lost)

    async def _left(self) -> None:
        with contextlib.suppress(Exception):
            await self.store.delete(f"m.{self.replica}")


class LeaderLease(LeaseHolder):
    """One role held by one replica at a time (the pricefeed's leader, the venue)."""

    def __init__(
        self,
        store: LeaseStore,
        role: str,
        replica: str | None = None,
        *,
        on_gained: Callable[[int], Awaitable[None]] | None = None,
        on_lost: Callable[[], Awaitable[None]] | None = None,
        renew_every: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        patience: Callable[[], float] | None = None,
    ) -> None:
        """``patience()``: how long the role must be seen free, once this replica saw it
        held, before it takes it (0: at once). A replica not ready to lead well (just
        started: it has not caught up with the leader) waits, so that a standby that has
        takes the role first."""
        super().__init__(
            store, _key_token(replica or default_replica_id()), renew_every=renew_every, clock=clock
        )
        self.role = role
        self.on_gained, self.on_lost = on_gained, on_lost
        self.patience = patience
        self._free_since: float | None = None
        self._seen_held = False

    @property
    def is_leader(self) -> bool:
        return self._valid(self.role) is not None

    @property
    def epoch(self) -> int:
        lease = self.held.get(self.role)
        return lease.epoch if lease is not None else 0

    async def round(self) -> None:
        if self._draining:
            return
        lease = self.held.get(self.role)
        if lease is not None:
            if not await self._renew(lease):
                await self._lost()
            return
        if not await self._waited():
            return
        taken = await self._take(self.role)
        if taken is not None and self.on_gained is not None:
            await self.on_gained(taken.epoch)

    async def _waited(self) -> bool:
        """Whether the role has been free for ``patience()`` seconds (seen each round).
        Free since this replica first looked, nobody held it lately: nobody to wait for."""
        wait = self.patience() if self.patience is not None else 0.0
        if wait <= 0:
            return True
        if await self.store.keys(self.role):  # held by another replica
            self._free_since, self._seen_held = None, True
            return False
        if not self._seen_held:
            return True
        now = self._clock()
        if self._free_since is None:
            self._free_since = now
        return now - self._free_since >= wait

    async def _lost(self) -> None:
        if self.on_lost is not None:
            await self.on_lost()

    async def _expire(self) -> None:
        if self.role in self.held and not self.is_leader:
            self.held.pop(self.role, None)
            await self._lost()

    async def _left(self) -> None:
        """A leader keeps no membership key: nothing more to give back."""
        return

    async def drain(self) -> None:
        was = self.role in self.held
        await super().drain()
        if was:
            await self._lost()
