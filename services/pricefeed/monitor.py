"""The risk monitor, pure: margin used per account kept incrementally, alert levels.

An index from symbol to the accounts holding it means a tick touches only those accounts;
each account keeps its per-symbol margin contribution, so a price change costs one
multiplication per holding account. Formulas come from :mod:`shared.domain`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from shared.domain import (
    CRITICAL_PCT,
    DEFAULT_MARGIN_RATE,
    WARN_PCT,
    AlertLevel,
    Holding,
    margin_used,
    next_alert_level,
    utilisation_pct,
)

__all__ = ["AccountRisk", "Breach", "RiskMonitor", "alert_rank", "breach_text"]

_PCT_STEP = Decimal("0.01")


def _account_id(account: AccountRisk) -> int:
    return account.id


_THRESHOLD: dict[AlertLevel, Decimal] = {"warn": WARN_PCT, "critical": CRITICAL_PCT}
_RANK: dict[AlertLevel | None, int] = {None: 0, "warn": 1, "critical": 2}


def alert_rank(level: AlertLevel | None) -> int:
    """0 for no alert level, 1 for warn, 2 for critical."""
    return _RANK[level]


@dataclass(frozen=True, slots=True)
class Breach:
    """An upward alert level change of one account."""

    account_id: int
    level: AlertLevel
    utilisation_pct: Decimal
    text: str

    def payload(self, ts_ms: float) -> dict[str, object]:
        """The ``risk.breach.<account_id>`` message (DESIGN.md §3.2)."""
        return {
            "level": self.level,
            "text": self.text,
            "ts": ts_ms,
            "utilisation_pct": str(self.utilisation_pct),
        }


def breach_text(level: AlertLevel, utilisation: Decimal) -> str:
    name = "critical" if level == "critical" else "warning"
    return f"Margin utilisation {utilisation:.2f}% crossed the {name} level ({_THRESHOLD[level]}%)"


class AccountRisk:
    """One account's holdings, margin used and current alert level."""

    __slots__ = ("id", "level", "limit", "qty", "used")

    def __init__(self, account_id: int, limit: Decimal, level: AlertLevel | None) -> None:
        self.id, self.limit, self.level = account_id, limit, level
        self.qty: dict[str, int] = {}
        self.used = Decimal(0)

    @property
    def utilisation(self) -> Decimal:
        return utilisation_pct(self.used, self.limit)


class RiskMonitor:
    """Margin and alert levels for every account, updated from price changes and reloads.

    Margin used is linear in quantity, so a price change of a symbol moves each holder's
    margin by ``qty × (unit_new − unit_old)``, where ``unit`` is the margin of one share
    (:func:`shared.domain.margin_used` of a one-share holding). Decimal arithmetic is exact
    at these magnitudes, so the running total equals a full recomputation.
    """

    def __init__(self, last: Mapping[str, Decimal], rates: Mapping[str, Decimal]) -> None:
        self._last = dict(last)
        self._rates = dict(rates)
        self._unit = {t: self._unit_margin(t, p) for t, p in self._last.items()}
        self._holders: dict[str, dict[int, tuple[AccountRisk, int]]] = {}
        self.accounts: dict[int, AccountRisk] = {}
        self._dirty: set[int] = set()

    def _holding(self, ticker: str, qty: int, last: Decimal) -> Holding:
        return Holding(ticker, qty, last, margin_rate=self._rates.get(ticker, DEFAULT_MARGIN_RATE))

    def _unit_margin(self, ticker: str, last: Decimal) -> Decimal:
        return margin_used((self._holding(ticker, 1, last),))

    def load_account(
        self,
        account_id: int,
        limit: Decimal,
        positions: Mapping[str, int],
        stored_level: AlertLevel | None = None,
    ) -> Breach | None:
        """Add or replace an account; its level continues from ``stored_level``.

        ``stored_level`` is the level last alerted (e.g. the newest stored alert), so a
        restart re-fires nothing unless the account moved up since.
        """
        old = self.accounts.get(account_id)
        if old is not None:
            for ticker in old.qty:
                del self._holders[ticker][account_id]
        account = AccountRisk(account_id, limit, stored_level)
        account.qty = {t: q for t, q in positions.items() if q > 0 and t in self._last}
        account.used = margin_used(
            self._holding(t, q, self._last[t]) for t, q in account.qty.items()
        )
        for ticker, qty in account.qty.items():
            self._holders.setdefault(ticker, {})[account_id] = (account, qty)
        self.accounts[account_id] = account
        self._dirty.add(account_id)
        return self._evaluate(account)

    def level_of(self, account_id: int) -> AlertLevel | None:
        account = self.accounts.get(account_id)
        return account.level if account is not None else None

    def note_alerted(self, account_id: int, level: AlertLevel) -> None:
        """Another process (the leader) alerted ``level`` for the account: a standby raises
        its own level to it, so after a takeover it does not alert that level again."""
        account = self.accounts.get(account_id)
        if account is not None and alert_rank(level) > alert_rank(account.level):
            account.level = level

    def on_prices(self, last: Mapping[str, Decimal]) -> list[Breach]:
        """Apply changed last prices; recompute only the accounts holding those symbols."""
        touched: set[AccountRisk] = set()
        unit, holders = self._unit, self._holders
        for ticker, price in last.items():
            if ticker not in unit:
                continue
            self._last[ticker] = price
            new = self._unit_margin(ticker, price)
            delta, unit[ticker] = new - unit[ticker], new
            if not delta:
                continue
            for account, qty in holders.get(ticker, {}).values():
                account.used += qty * delta
                touched.add(account)
        breaches = []
        for account in sorted(touched, key=_account_id):
            self._dirty.add(account.id)
            breach = self._evaluate(account)
            if breach is not None:
                breaches.append(breach)
        return breaches

    def _evaluate(self, account: AccountRisk) -> Breach | None:
        utilisation = account.utilisation
        level, fire = next_alert_level(account.level, utilisation)
        account.level = level
        if not fire or level is None:
            return None
        shown = utilisation.quantize(_PCT_STEP, ROUND_HALF_UP)
        return Breach(account.id, level, shown, breach_text(level, shown))

    def margin_used(self, account_id: int) -> Decimal:
        return self.accounts[account_id].used

    def holders(self, ticker: str) -> set[int]:
        return set(self._holders.get(ticker, ()))

    def take_dirty(self) -> dict[int, Decimal]:
        """Margin used of every account changed since the last call (for the batched write)."""
        dirty, self._dirty = self._dirty, set()
        return {a: self.accounts[a].used for a in dirty if a in self.accounts}

    def recompute(self, account_id: int) -> Decimal:
        """Margin used from scratch, for checks: the full formula over all holdings."""
        account = self.accounts[account_id]
        return margin_used(self._holding(t, q, self._last[t]) for t, q in account.qty.items())
