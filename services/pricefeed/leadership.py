"""Which pricefeed replica leads: one leader ticks, alerts and writes; the others stand by.

The leader holds the ``leader`` key of the pricefeed's lease bucket (JetStream KV, renewed
every quarter of ``PRICEFEED_LEASE_TTL_S``). A standby's renewal round takes the key once
a dead leader's lease expired, or within one round after a leader released it (shutdown,
``POST /ops/release``). The lease's epoch fences the leader's database writes
(:func:`shared.db.fencing.claim_epoch`): a write refused as stale means a newer leader
exists, and this one resigns at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.fencing import StaleEpoch, claim_epoch
from shared.leases import LeaderLease, LeaseStore

__all__ = ["FENCE_ROLE", "LEASE_KEY", "Leadership"]

log = logging.getLogger(__name__)

LEASE_KEY = "leader"  # in the bucket wire.lease_bucket("pricefeed")
FENCE_ROLE = "pricefeed"  # its row in leader_epochs
# A cold replica (no tick of a leader seen: just started) lets the key be free this many
# renewal rounds before it takes it, so a warm standby (which takes it in its first round)
# wins: it continues the leader's prices and seq exactly.
COLD_ROUNDS = 2


class Leadership:
    """This replica's part: leader (``leading``, under ``epoch``) or standby.

    ``warm()`` says whether this replica has the leader's last state (it followed its
    ticks); a cold one competes only after the key stayed free for ``COLD_ROUNDS`` rounds.

    ``on_lead(epoch)`` runs when the lease is gained, before the first tick;
    ``on_follow()`` when it is lost or given back, once ticking stopped and while the
    epoch still fences the last writes (pending alerts, the last batch). Without a store
    (an in-memory bus: one process) the replica leads from :meth:`start` on, unfenced.
    """

    def __init__(
        self,
        store: LeaseStore | None,
        replica: str,
        *,
        on_lead: Callable[[int], Awaitable[None]],
        on_follow: Callable[[], Awaitable[None]],
        warm: Callable[[], bool] = lambda: True,
    ) -> None:
        self.lease = (
            None
            if store is None
            else LeaderLease(
                store,
                LEASE_KEY,
                replica,
                on_gained=self._gained,
                on_lost=self._lost,
                patience=self._patience,
            )
        )
        self._warm = warm
        self.replica = self.lease.replica if self.lease is not None else replica
        self.epoch: int | None = None
        self._on_lead, self._on_follow = on_lead, on_follow
        self._acting = False
        self._resigning: asyncio.Task[None] | None = None

    def _patience(self) -> float:
        if self._warm() or self.lease is None:
            return 0.0
        return COLD_ROUNDS * self.lease.renew_every

    @property
    def leading(self) -> bool:
        """Whether to tick and alert now: leader, and (self-fencing) the lease was
        renewed recently enough that nobody else can hold it yet."""
        return self._acting and (self.lease is None or self.lease.is_leader)

    async def start(self) -> None:
        """Take the lease if it is free (the first round), then keep competing for it."""
        if self.lease is None:
            await self._gained(0)
        else:
            await self.lease.start()

    async def step_down(self) -> None:
        """Stop ticking, write what is pending, then give the lease back: a standby takes
        over within one renewal round. The replica stays a standby that no longer competes
        (a pod about to stop)."""
        if self._resigning is not None:
            self._resigning.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resigning
        await self._lost()
        if self.lease is not None:
            await self.lease.stop(release=True)

    async def fence(self, session: AsyncSession) -> None:
        """The first statement of every leader write: claim the epoch, or resign."""
        if self.lease is None:
            return
        if self.epoch is None:
            raise StaleEpoch(FENCE_ROLE, None)
        try:
            await claim_epoch(session, FENCE_ROLE, self.epoch, self.replica)
        except StaleEpoch:
            if self._acting:
                log.error(
                    "epoch %d refused: a newer leader has written; resigning (if the NATS "
                    "JetStream store was reset, lease epochs restarted: delete the "
                    "leader_epochs row of %r)",
                    self.epoch,
                    FENCE_ROLE,
                )
                self._acting = False
                self._resigning = asyncio.create_task(self._resign(), name="pricefeed-resign")
            raise

    async def _resign(self) -> None:
        assert self.lease is not None
        await self.lease.stop(release=True)  # gives back the key if it is still ours
        await self.lease.start()  # and competes again, as a standby

    async def _gained(self, epoch: int) -> None:
        self.epoch = epoch
        await self._on_lead(epoch)
        self._acting = True

    async def _lost(self) -> None:
        if self.epoch is None:
            return
        self._acting = False
        try:
            await self._on_follow()
        finally:
            log.info("standing by (was leader with epoch %d)", self.epoch)
            self.epoch = None
