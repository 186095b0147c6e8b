"""RiskMetricsComponent: margin utilisation, sector exposure and live alerts (the seed's).

Its numbers live in :mod:`services.risk.state` (a tick moves them exactly), their
formatted views in :mod:`services.risk.views` (a tick formats again only the figures and
names the parts that changed).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import BindParameter, bindparam, select

from services.risk.state import (
    LEVELS,
    AlertRow,
    HoldingRow,
    RiskState,
    SectorRow,
    move,
    recompute,
)
from services.risk.views import (
    ALERTS_ID,
    EXPOSURE_ID,
    GAUGE_ID,
    SUMMARY_ID,
    Views,
    refresh,
    views_of,
)
from shared import wire
from shared.components import Component, IsAuthenticated, PartSpec, Registry
from shared.components.base import LiveResult
from shared.db.models import Account, Position, RiskAlert, Symbol
from shared.db.queries import account_and_positions
from shared.db.reads import Read
from shared.ticks import price_moves

__all__ = [
    "ALERTS_ID",
    "EXPOSURE_ID",
    "GAUGE_ID",
    "MAX_ALERTS",
    "SUMMARY_ID",
    "AlertRow",
    "HoldingRow",
    "RiskMetricsComponent",
    "RiskState",
    "SectorRow",
    "registry",
]

registry = Registry()

MAX_ALERTS = 10

_ACCOUNT: BindParameter[int] = bindparam("account_id")
_LIMIT_AND_HOLDINGS = Read(
    account_and_positions(
        (Account.margin_limit,),
        Position.quantity,
        Symbol.ticker,
        Symbol.last,
        Symbol.margin_rate,
        Symbol.sector,
        account_id=_ACCOUNT,
    ).order_by(Symbol.ticker)
)
_ALERTS = Read(
    select(RiskAlert.level, RiskAlert.text, RiskAlert.created_at)
    .where(RiskAlert.account_id == _ACCOUNT)
    .order_by(RiskAlert.created_at.desc(), RiskAlert.id.desc())
    .limit(MAX_ALERTS)
)


def _epoch_ms(moment: datetime) -> float:
    return moment.timestamp() * 1000


@registry.register("risk_metrics")
class RiskMetricsComponent(Component[RiskState]):
    template_name = "components/risk_metrics.html"
    permission_classes = [IsAuthenticated]
    cache_key_prefix = "risk"
    cache_ttl = 10
    live_interval = 1.0  # the gauge and exposure repaint once a second, not every tick
    stencils = {
        "gauge": ("id", "used", "limit", "pct", "level_cls", "width"),
        "sector_fig": ("id", "value", "share"),
        "sector_bar": ("id", "sector", "share", "width"),
        "summary": ("id", "pct", "level", "free"),
    }
    outside_root = frozenset({SUMMARY_ID})
    subscriptions = {
        wire.PRICES_TICKS: wire.EVENT_PRICE_TICK,
        wire.RISK_BREACH_TEMPLATE: wire.EVENT_RISK_BREACH,
        wire.ORDERS_EVENTS_TEMPLATE: wire.EVENT_ORDER,
    }
    _kept: Views | None = None  # the views as last published

    async def mount(self) -> None:
        account_id = self.request.user.account_id
        rows = await _LIMIT_AND_HOLDINGS.rows(self.session, account_id=account_id)
        alerts = await _ALERTS.rows(self.session, account_id=account_id)
        limit = rows[0][0] if rows else None
        self.state["margin_limit"] = limit if limit is not None else Decimal(0)
        self.state["holdings"] = [
            {"symbol": t, "qty": q, "last": last, "margin_rate": rate, "sector": sector}
            for _limit, q, t, last, rate, sector in rows
            if q is not None  # (an account without positions: one row, its limit)
        ]
        self.state["alerts"] = [
            {"level": level, "text": text, "ts": _epoch_ms(created)}
            for level, text, created in alerts
        ]
        recompute(self.state)

    async def on_ws_message(self, message: dict[str, Any]) -> LiveResult:
        event = message.get("event")
        if event == wire.EVENT_PRICE_TICK:
            return self._on_tick(message.get("prices") or {})
        if event == wire.EVENT_RISK_BREACH:
            return self._on_breach(message)
        if event == wire.EVENT_ORDER:
            await self.remount()
            return self._changed_parts()
        return None

    def _on_tick(self, prices: dict[str, Any]) -> LiveResult:
        moved = price_moves(self.state.get("holdings", []), prices)
        if not moved:
            return False
        for holding, _, last in moved:
            holding["last"] = last
        if not move(self.state, moved):
            recompute(self.state)
        return self._changed_parts()

    def _on_breach(self, message: dict[str, Any]) -> LiveResult:
        level = message.get("level")
        if level not in LEVELS:
            return False
        alert: AlertRow = {
            "level": level,
            "text": str(message.get("text", "")),
            "ts": message.get("ts"),
        }
        alerts = self.state.setdefault("alerts", [])
        alerts.insert(0, alert)
        del alerts[MAX_ALERTS:]
        self.state["_version"] = self.state.get("_version", 0) + 1
        # the pricefeed stored the alert: a reload within cache_ttl must show it too
        self.invalidate_cache()
        return self._changed_parts()

    async def remount(self) -> None:
        # its catch-up tick must leave the views as published: the caller compares with them
        kept, self._kept = self._kept, None
        await super().remount()
        self._kept = kept

    def _views(self) -> Views:
        """The formatted views, formatted again only where the state changed (a tick, an
        alert)."""
        views = self._kept
        if views is None or views.state is not self.state:
            views = self._kept = views_of(self.state)
        elif views.version != self.state.get("_version", 0) and refresh(views) is None:
            views = self._kept = views_of(self.state)
        return views

    def _changed_parts(self) -> LiveResult:
        """The parts a change of the state changed, since the views were last brought up
        to date (the last publication); None ("compare") when they were kept for another
        state or the sectors changed."""
        views = self._kept
        if views is None or views.state is not self.state:
            return None
        changed = refresh(views)
        if changed is None:
            self._kept = None
        return changed

    def get_context(self) -> dict[str, Any]:
        views = self._views()
        return {
            "exposure_id": EXPOSURE_ID,
            "alerts_id": ALERTS_ID,
            "gauge": views.gauge,
            "summary": views.summary,
            "exposure": views.exposure,
            "alerts": views.alerts,
        }

    def live_parts(self) -> dict[str, PartSpec]:
        return self._views().parts
