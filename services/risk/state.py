"""The risk panel's numbers: a trader's holdings, margin used and sector values.

A tick moves margin used and the sector values by what it moved, exactly: the result is
always what a full recompute over every holding would find.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal, Inexact, localcontext
from typing import Any, NotRequired, TypedDict

from shared import domain

__all__ = [
    "LEVELS",
    "AlertRow",
    "HoldingRow",
    "Move",
    "RiskState",
    "SectorRow",
    "move",
    "recompute",
]

LEVELS = frozenset({"warn", "critical"})


class HoldingRow(TypedDict):
    symbol: str
    qty: int
    last: Decimal
    margin_rate: NotRequired[Decimal]
    sector: NotRequired[str]


class SectorRow(TypedDict):
    sector: str
    value: Decimal
    share_pct: Decimal


class AlertRow(TypedDict):
    level: str
    text: str
    ts: Any  # epoch ms (float) as sent, or ISO text in the seed's state


class RiskState(TypedDict, total=False):
    margin_limit: Decimal
    margin_used: Decimal
    utilisation_pct: Decimal
    holdings: list[HoldingRow]
    sector_exposure: list[SectorRow]
    alerts: list[AlertRow]
    _sector_values: dict[str, Decimal]  # exact market value per sector: what ticks move
    _version: int  # bumped on every change: the formatted views are kept until it moves


def _holdings(state: RiskState) -> list[domain.Holding]:
    return [
        domain.Holding(
            h["symbol"],
            int(h["qty"]),
            domain.dec(h["last"]),
            sector=h.get("sector", ""),
            margin_rate=domain.dec(h.get("margin_rate", domain.DEFAULT_MARGIN_RATE)),
        )
        for h in state.get("holdings", [])
    ]


def recompute(state: RiskState) -> None:
    """Margin used and the sector values, summed over every holding."""
    holdings = _holdings(state)
    state["margin_used"] = domain.margin_used(holdings)
    state["_sector_values"] = domain.sector_values(holdings)
    _shares(state)


Move = tuple[HoldingRow, Decimal, Decimal]  # (holding, old last, new last)


def move(state: RiskState, moved: Iterable[Move]) -> bool:
    """Margin used and the sector values moved by what a tick moved; False (the state
    untouched) without values to move or when a sum would round: a tick never drifts
    from what :func:`recompute` would find."""
    values = state.get("_sector_values")
    if values is None:
        return False
    values, used = dict(values), domain.dec(state["margin_used"])
    with localcontext() as exact:
        exact.traps[Inexact] = True
        try:
            for holding, old, last in moved:
                move = domain.price_move(old, last, int(holding["qty"]))
                values[holding.get("sector", "")] += move
                rate = holding.get("margin_rate", domain.DEFAULT_MARGIN_RATE)
                used += domain.margin_move(move, domain.dec(rate))
        except (Inexact, KeyError):
            return False
    state["margin_used"], state["_sector_values"] = used, values
    _shares(state)
    return True


def _shares(state: RiskState) -> None:
    """Utilisation and each sector's share, from margin used and the sector values (as
    :func:`shared.domain.sector_shares`, without an object per sector in between)."""
    state["_version"] = state.get("_version", 0) + 1
    used, values = state["margin_used"], state["_sector_values"]
    state["utilisation_pct"] = domain.utilisation_pct(used, domain.dec(state["margin_limit"]))
    total = sum(values.values(), Decimal(0))
    exposure: list[SectorRow] = [
        {"sector": sector, "value": value, "share_pct": domain.share_pct(value, total)}
        for sector, value in values.items()
    ]
    exposure.sort(key=lambda row: (-row["value"], row["sector"]))  # largest first
    state["sector_exposure"] = exposure
