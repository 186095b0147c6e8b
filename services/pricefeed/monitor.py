"""The risk monitor, pure: margin used per account kept incrementally, alert levels.

An index from symbol to the accounts holding it means a tick touches only those accounts,
and a price change costs one integer multiply-add per holding account: margins are kept
exactly as integers of ``10^-scale`` (the scale grows when a price needs more places).
Each account also keeps the band of margin, in the same units, within which its alert
level cannot change, so a tick compares integers and runs the :mod:`shared.domain`
formulas only for the few accounts that left their band.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Mapping, MutableSequence
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from itertools import compress, count
from operator import ge, ne

from shared.domain import (
    CRITICAL_PCT,
    DEFAULT_MARGIN_RATE,
    WARN_PCT,
    AlertLevel,
    Holding,
    alert_band,
    gauge_level,
    least_used_reaching,
    margin_used,
    next_alert_level,
    position_margin,
    scaled,
    utilisation_pct,
)

__all__ = ["AccountRisk", "Breach", "RiskMonitor", "alert_rank", "breach_text"]

_PCT_STEP = Decimal("0.01")
_ZERO = Decimal(0)
# Fewer holdings than accounts ÷ this moved by a tick: check the touched accounts one by one,
# otherwise scan every account's band in C.
_SCAN_RATIO = 4
_INT64 = 2**63  # margins are kept in an array('q') while they surely fit, else in a list


def _places(value: Decimal) -> int:
    """Decimal places ``value`` needs (trailing zeros do not count)."""
    exponent = value.normalize().as_tuple().exponent
    return max(0, -exponent) if isinstance(exponent, int) else 0


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
    """One account's holdings, margin limit, current alert level and slot in the monitor."""

    __slots__ = ("id", "level", "limit", "qty", "slot")

    def __init__(
        self, account_id: int, limit: Decimal, level: AlertLevel | None, slot: int
    ) -> None:
        self.id, self.limit, self.level, self.slot = account_id, limit, level, slot
        self.qty: dict[str, int] = {}


class RiskMonitor:
    """Margin and alert levels for every account, updated from price changes and reloads.

    Margin used is linear in quantity, so a price change of a symbol moves each holder's
    margin by ``qty × (unit_new − unit_old)``, where ``unit`` is the margin of one share
    (:func:`shared.domain.position_margin` of one share). Units and margins are held
    as exact integers of ``10^-scale``, so the running total equals a full recomputation
    (and the ``Decimal`` formula wherever that is exact, i.e. within its 28 digits).

    An account's level changes only when its utilisation leaves
    :func:`shared.domain.alert_band` of its level; the band's ends, as margin in the same
    integer units (:func:`shared.domain.least_used_reaching`), are kept per account. An
    account whose margin is outside its band is *unsettled* (its level was raised by
    :meth:`note_alerted`, or its limit is negative): like any account it is evaluated
    only when a tick touches it, as the formula-per-account monitor did.
    """

    def __init__(self, last: Mapping[str, Decimal], rates: Mapping[str, Decimal]) -> None:
        self._last = dict(last)
        self._rates = dict(rates)
        # As few places as the unit margins need (small integers are the fastest); grows
        # when a price needs more (see _rescale).
        self._scale = 0
        self._unit: dict[str, int] = {}
        self._holders: dict[str, dict[int, int]] = {}  # ticker → slot → qty
        self.accounts: dict[int, AccountRisk] = {}
        self._ids: list[int] = []  # slot → account id
        # slot → margin used, in units of 10^-scale; an array while |margin| < 2^63 is sure:
        # it is at most (Σ qty of any account) × (largest |unit| so far)
        self._used: MutableSequence[int] = array("q")
        self._max_qty = self._max_unit = 0
        self._high: list[int | float] = []  # slot → the top of its band (exclusive)
        self._low: dict[int, int | float] = {}  # slot → the bottom of its band, if it has one
        self._reaching: dict[tuple[Decimal, Decimal], int] = {}  # (pct, limit) → units
        self._unsettled: set[int] = set()
        self._dirty: set[int] = set()  # slots reloaded since take_dirty
        self._moved: set[str] = set()  # tickers whose unit margin moved since take_dirty
        self._unit.update(self._units_of(self._unit_margins(self._last)))

    def _holding(self, ticker: str, qty: int, last: Decimal) -> Holding:
        return Holding(ticker, qty, last, margin_rate=self._rates.get(ticker, DEFAULT_MARGIN_RATE))

    def _unit_margins(self, last: Mapping[str, Decimal]) -> dict[str, Decimal]:
        """The margin of one share of each symbol at ``last``."""
        rates, default = self._rates, DEFAULT_MARGIN_RATE
        return {t: position_margin(1, p, rates.get(t, default)) for t, p in last.items()}

    def _units_of(self, margins: Mapping[str, Decimal]) -> dict[str, int]:
        """Each margin as an exact integer of ``10^-scale``, rescaling everything first if
        one needs more places."""
        shifted = [m.scaleb(self._scale) for m in margins.values()]
        units = list(map(int, shifted))
        if any(map(ne, units, shifted)):
            self._rescale(max(self._scale, *map(_places, margins.values())))
            return self._units_of(margins)
        self._max_unit = max(self._max_unit, *map(abs, units), 0)
        return dict(zip(margins, units, strict=True))

    def _rescale(self, scale: int) -> None:
        """Every figure in units of ``10^-scale`` from now on: O(accounts), once per place
        a new price needs beyond the current scale."""
        factor = 10 ** (scale - self._scale)
        self._scale = scale
        for ticker in self._unit:
            self._unit[ticker] *= factor
        self._max_unit *= factor
        self._store([u * factor for u in self._used])
        self._reaching.clear()
        for account in self.accounts.values():
            self._settle(account)

    def _fit(self) -> None:
        if isinstance(self._used, array) and self._max_qty * self._max_unit >= _INT64:
            self._store(list(self._used))

    def _store(self, used: list[int]) -> None:
        """Keep margins in an array('q') while no margin can reach 2^63, else in a list."""
        if self._max_qty * self._max_unit < _INT64:
            self._used = array("q", used)
        else:
            self._used = used

    def load_account(
        self,
        account_id: int,
        limit: Decimal,
        positions: Mapping[str, int],
        stored_level: AlertLevel | None = None,
        *,
        stored: bool = False,
    ) -> Breach | None:
        """Add or replace an account; its level continues from ``stored_level``.

        ``stored_level`` is the level last alerted, so a restart re-fires nothing unless
        the account moved up since. ``stored``: it is the newest alert in the table, which
        holds the levels raised but not those that cleared since; it then counts only as
        far as the utilisation alone reaches now. An account that cleared and came back
        within the hysteresis band is warned again when it crosses; never missed.
        """
        old = self.accounts.get(account_id)
        if old is not None:
            slot = old.slot
            for ticker in old.qty:
                del self._holders[ticker][slot]
        else:
            slot = len(self._ids)
            self._ids.append(account_id)
            self._used.append(0)
            self._high.append(math.inf)
        account = AccountRisk(account_id, limit, stored_level, slot)
        account.qty = {t: q for t, q in positions.items() if q > 0 and t in self._last}
        self._max_qty = max(self._max_qty, sum(account.qty.values()))
        self._fit()
        self._used[slot] = sum(q * self._unit[t] for t, q in account.qty.items())
        for ticker, qty in account.qty.items():
            self._holders.setdefault(ticker, {})[slot] = qty
        self.accounts[account_id] = account
        self._dirty.add(slot)
        if stored:
            reached = gauge_level(utilisation_pct(self.margin_used(account_id), limit))
            if alert_rank(reached) < alert_rank(account.level):
                account.level = reached
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
            self._settle(account)

    def on_prices(self, last: Mapping[str, Decimal]) -> list[Breach]:
        """Apply changed last prices; re-evaluate the touched accounts that left their band.

        Breaches come in account id order."""
        unit, holders = self._unit, self._holders
        known = {t: p for t, p in last.items() if t in unit}
        self._last.update(known)
        new_units = self._units_of(self._unit_margins(known))  # may rescale
        self._fit()
        used = self._used
        moved: list[str] = []
        updates = 0
        for ticker, new in new_units.items():
            delta = new - unit[ticker]
            if not delta:
                continue
            unit[ticker] = new
            moved.append(ticker)
            held = holders.get(ticker)
            if held:
                updates += len(held)
                for slot, qty in held.items():
                    used[slot] += qty * delta
        if not moved:
            return []
        self._moved.update(moved)
        breaches = []
        for slot in sorted(self._left_band(moved, updates), key=self._ids.__getitem__):
            breach = self._evaluate(self.accounts[self._ids[slot]])
            if breach is not None:
                breaches.append(breach)
        return breaches

    def _left_band(self, moved: list[str], updates: int) -> set[int]:
        """Slots touched by ``moved`` whose margin is outside their band."""
        used, low, high = self._used, self._low, self._high
        if updates * _SCAN_RATIO < len(used):
            touched: set[int] = set().union(*(self._holders.get(t, ()) for t in moved))
            return {s for s in touched if not low.get(s, -math.inf) <= used[s] < high[s]}
        # Only a touched account can have left its band, unless it is unsettled.
        out = {*compress(count(), map(ge, used, high)), *(s for s, v in low.items() if used[s] < v)}
        if self._unsettled:
            tickers = set(moved)
            untouched = {
                s
                for s in self._unsettled & out
                if tickers.isdisjoint(self.accounts[self._ids[s]].qty)
            }
            out -= untouched
        return out

    def _evaluate(self, account: AccountRisk) -> Breach | None:
        utilisation = utilisation_pct(self.margin_used(account.id), account.limit)
        level, fire = next_alert_level(account.level, utilisation)
        account.level = level
        self._settle(account)
        if not fire or level is None:
            return None
        shown = utilisation.quantize(_PCT_STEP, ROUND_DOWN)  # 94.996 % is no "95.00" warning
        return Breach(account.id, level, shown, breach_text(level, shown))

    def _settle(self, account: AccountRisk) -> None:
        """Set the account's band for its level; unsettled if its margin is outside it."""
        slot, limit = account.slot, account.limit
        low_pct, high_pct = alert_band(account.level)
        low: int | float
        high: int | float
        if limit > 0:
            low = -math.inf if low_pct is None else self._least_reaching(low_pct, limit)
            high = math.inf if high_pct is None else self._least_reaching(high_pct, limit)
        elif (
            limit == 0
            and (low_pct is None or _ZERO >= low_pct)
            and (high_pct is None or _ZERO < high_pct)
        ):
            low, high = -math.inf, math.inf  # utilisation is always 0: inside for good
        else:
            low, high = math.inf, -math.inf  # evaluated whenever touched
        self._high[slot] = high
        if low == -math.inf:
            self._low.pop(slot, None)
        else:
            self._low[slot] = low
        if low <= self._used[slot] < high:
            self._unsettled.discard(slot)
        else:
            self._unsettled.add(slot)

    def _least_reaching(self, pct: Decimal, limit: Decimal) -> int:
        key = (pct, limit)
        units = self._reaching.get(key)
        if units is None:
            if len(self._reaching) > 4 * len(self.accounts) + 64:  # limits changed a lot
                self._reaching.clear()
            units = self._reaching[key] = least_used_reaching(pct, limit, self._scale)
        return units

    def margin_used(self, account_id: int) -> Decimal:
        return scaled(self._used[self.accounts[account_id].slot], self._scale)

    def holders(self, ticker: str) -> set[int]:
        return {self._ids[s] for s in self._holders.get(ticker, ())}

    def take_dirty(self) -> dict[int, Decimal]:
        """Margin used of every account changed since the last call (for the batched write)."""
        slots, self._dirty = self._dirty, set()
        slots.update(*(self._holders[t] for t in self._moved if t in self._holders))
        self._moved = set()
        quantum = scaled(1, self._scale)
        margins = map(quantum.__mul__, map(Decimal, map(self._used.__getitem__, slots)))
        return dict(zip(map(self._ids.__getitem__, slots), margins, strict=True))

    def recompute(self, account_id: int) -> Decimal:
        """Margin used from scratch, for checks: the full formula over all holdings."""
        account = self.accounts[account_id]
        return margin_used(self._holding(t, q, self._last[t]) for t, q in account.qty.items())
