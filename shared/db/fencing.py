"""Fencing a single-leader role's writes in PostgreSQL by its lease epoch (DESIGN.md §8).

A leader's lease (:class:`shared.leases.LeaderLease`) has an epoch that grows with every
change of leader. Each write transaction of the leader starts with :func:`claim_epoch`: an
atomic upsert that records the epoch unless a newer one already wrote. A deposed leader
that has not noticed yet (a long pause, a partition from NATS) is refused with
:class:`StaleEpoch` and its transaction changes nothing. The claim locks the role's row
until commit, so an old leader's transaction already under way finishes before the new
leader's first write, never after it.
"""

from __future__ import annotations

from sqlalchemy import func
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from shared.db.models import LeaderEpoch

__all__ = ["StaleEpoch", "claim_epoch"]


class StaleEpoch(Exception):
    """A leader of ``role`` with a newer epoch than ``epoch`` has written already (or, with
    ``epoch`` None, the writer no longer leads)."""

    def __init__(self, role: str, epoch: int | None) -> None:
        self.role, self.epoch = role, epoch
        if epoch is None:
            super().__init__(f"{role}: not the leader")
        else:
            super().__init__(f"{role}: epoch {epoch} is stale (a newer leader has written)")


async def claim_epoch(session: AsyncSession, role: str, epoch: int, holder: str = "") -> None:
    """Record ``epoch`` as ``role``'s newest writer in this transaction, or raise
    :class:`StaleEpoch` (roll the transaction back) when a newer epoch is stored."""
    row = insert(LeaderEpoch).values(role=role, epoch=epoch, holder=holder)
    claim = row.on_conflict_do_update(
        index_elements=[LeaderEpoch.role],
        set_={"epoch": row.excluded.epoch, "holder": row.excluded.holder, "updated_at": func.now()},
        where=LeaderEpoch.epoch <= row.excluded.epoch,
    ).returning(LeaderEpoch.epoch)
    if (await session.execute(claim)).scalar_one_or_none() is None:
        raise StaleEpoch(role, epoch)
