"""A standby keeps warm from the leader's messages, so a takeover continues where it left.

Each leader tick is applied to the standby's quote board, risk monitor and pending batch,
exactly as the leader applied it; the standby remembers the tick's ``seq`` (the new leader
continues from the next one). A breach the standby computes itself is not alerted: it is
kept until the leader's ``risk.breach.<account>`` for that level arrives. One still
unconfirmed at a takeover was never alerted (the leader died first), and the new leader
alerts it; one confirmed, or any level the leader alerted, is not alerted again.
"""

from __future__ import annotations

import logging
from typing import Any

from services.pricefeed.domain import QuoteBoard
from services.pricefeed.metrics import PricefeedMetrics
from services.pricefeed.monitor import Breach, RiskMonitor, alert_rank
from services.pricefeed.writers import BatchWriter
from shared import wire
from shared.ticks import quotes_of_tick

__all__ = ["LeaderFollower"]

log = logging.getLogger(__name__)


class LeaderFollower:
    """What a standby does with the leader's ticks and alerts (no I/O)."""

    def __init__(
        self,
        book: QuoteBoard,
        monitor: RiskMonitor,
        batch: BatchWriter,
        metrics: PricefeedMetrics,
    ) -> None:
        self.book, self.monitor, self.batch, self.metrics = book, monitor, batch, metrics
        self.last_seq = 0
        self.last_epoch = 0
        self._unconfirmed: dict[int, Breach] = {}

    def on_tick(self, payload: dict[str, Any]) -> None:
        """Apply one of the leader's ``prices.ticks`` messages; a late one from an older
        leader (a lower ``epoch``) is ignored."""
        epoch = payload.get("epoch")
        if isinstance(epoch, int):
            if epoch < self.last_epoch:
                return
            self.last_epoch = epoch
        seq = payload.get("seq")
        if isinstance(seq, int) and seq > self.last_seq:
            self.last_seq = seq
        changed = self.book.apply(quotes_of_tick(payload.get("prices")))
        self.metrics.followed_ticks.inc()
        if not changed:
            return
        symbols = self.book.symbols
        self.batch.add_prices({symbols[t].id: q for t, q in changed.items()})
        for breach in self.monitor.on_prices({t: q.last for t, q in changed.items()}):
            self.computed(breach)

    def computed(self, breach: Breach) -> None:
        """A breach this standby computed (from a tick or an order event): the leader
        alerts it; remember it until its alert is seen."""
        self._unconfirmed[breach.account_id] = breach

    def on_alert(self, subject: str, payload: dict[str, Any]) -> None:
        """The leader alerted ``risk.breach.<account>``: that level is alerted."""
        level = payload.get("level")
        if level not in ("warn", "critical"):
            return
        try:
            account_id = wire.account_of_subject(subject)
        except ValueError:
            return
        self.monitor.note_alerted(account_id, level)
        pending = self._unconfirmed.get(account_id)
        if pending is not None and alert_rank(pending.level) <= alert_rank(level):
            del self._unconfirmed[account_id]

    def take_unalerted(self) -> list[Breach]:
        """At a takeover: the breaches the old leader never alerted, whose level the
        account still has."""
        pending, self._unconfirmed = self._unconfirmed, {}
        return [
            b for _, b in sorted(pending.items()) if self.monitor.level_of(b.account_id) == b.level
        ]
