"""RiskMetricsComponent: margin utilisation, sector exposure and live alerts (the seed's)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from functools import cache
from typing import Any, NotRequired, TypedDict

from sqlalchemy import select

from shared import domain, wire
from shared.charts import bar_width
from shared.components import Component, IsAuthenticated, PartSpec, Registry
from shared.components.rendering import money
from shared.db.models import Account, Position, RiskAlert, Symbol
from shared.db.queries import held_positions
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
GAUGE_ID = wire.element_id("risk_metrics", "gauge")
EXPOSURE_ID = wire.element_id("risk_metrics", "exposure")
ALERTS_ID = wire.element_id("risk_metrics", "alerts")
SUMMARY_ID = wire.element_id("risk_metrics", "summary")  # in the page's header
_LEVELS = frozenset({"warn", "critical"})
_TENTH = Decimal("0.1")


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
    _version: int  # bumped on every change: the formatted views are kept until it moves


def _epoch_ms(moment: datetime) -> float:
    return moment.timestamp() * 1000


def _moment(ts: Any) -> datetime | None:
    """An alert's ``ts`` (epoch ms on the wire, ISO text in the seed) as a UTC datetime."""
    try:
        return datetime.fromtimestamp(float(ts) / 1000, UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        pass
    try:
        moment = datetime.fromisoformat(str(ts))
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


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


def _recompute(state: RiskState) -> None:
    state["_version"] = state.get("_version", 0) + 1
    holdings = _holdings(state)
    used = domain.margin_used(holdings)
    state["margin_used"] = used
    state["utilisation_pct"] = domain.utilisation_pct(used, domain.dec(state["margin_limit"]))
    state["sector_exposure"] = [
        {"sector": s.sector, "value": s.value, "share_pct": s.share_pct}
        for s in domain.sector_exposure(holdings)
    ]


def _gauge_view(state: RiskState) -> dict[str, str]:
    exact = domain.dec(state.get("utilisation_pct", 0))
    # truncated, so the figure shown never crosses a threshold the gauge class does not
    shown = exact.quantize(_TENTH, rounding=ROUND_DOWN)
    level = domain.gauge_level(exact)
    return {
        "id": GAUGE_ID,
        "used": money(domain.dec(state.get("margin_used", 0)), 0),
        "limit": money(domain.dec(state.get("margin_limit", 0)), 0),
        "pct": str(shown),
        "level_cls": f" gauge--{level}" if level else "",
        "width": bar_width(shown),
    }


def _summary_view(gauge: dict[str, str], state: RiskState) -> dict[str, str]:
    """The header's margin figure: utilisation as the gauge shows it, its level (a critical
    one is a banner wherever the risk panel is scrolled), and the margin still available."""
    level = gauge["level_cls"].replace(" gauge--", "")
    free = domain.dec(state.get("margin_limit", 0)) - domain.dec(state.get("margin_used", 0))
    return {"id": SUMMARY_ID, "pct": gauge["pct"], "level": level, "free": money(free, 0)}


@cache
def _sector_ids(sector: str) -> tuple[str, str]:
    """The element ids of a sector's figures and bar."""
    return (
        wire.element_id("risk_metrics", "sector", sector, "f"),
        wire.element_id("risk_metrics", "sector", sector, "b"),
    )


def _exposure_view(state: RiskState) -> list[dict[str, Any]]:
    """Sectors by name: a stable order, so a tick moves bars and figures, never rows."""
    view = []
    for row in sorted(state.get("sector_exposure", []), key=lambda r: r["sector"] or "Other"):
        share = str(domain.dec(row["share_pct"]).quantize(_TENTH, ROUND_HALF_UP))
        sector = row["sector"] or "Other"
        fig_id, bar_id = _sector_ids(sector)
        view.append(
            {
                "sector": sector,
                # the figures move with every price; the bar only when the share does
                "fig": {"id": fig_id, "value": money(domain.dec(row["value"]), 0), "share": share},
                "bar": {"id": bar_id, "sector": sector, "share": share, "width": bar_width(share)},
            }
        )
    return view


def _alerts_view(state: RiskState) -> list[dict[str, Any]]:
    view = []
    for alert in state.get("alerts", []):
        moment = _moment(alert.get("ts"))
        view.append(
            {
                "level": alert["level"] if alert.get("level") in _LEVELS else "warn",
                "text": alert.get("text", ""),
                "clock": moment.strftime("%H:%M:%S") if moment else "",
                "iso": moment.isoformat(timespec="seconds") if moment else "",
            }
        )
    return view


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

    async def mount(self) -> None:
        account_id = self.request.user.account_id
        limit = await self.session.scalar(
            select(Account.margin_limit).where(Account.id == account_id)
        )
        rows = await self.session.execute(
            held_positions(
                Position.quantity,
                Symbol.ticker,
                Symbol.last,
                Symbol.margin_rate,
                Symbol.sector,
                account_id=account_id,
            ).order_by(Symbol.ticker)
        )
        alerts = await self.session.execute(
            select(RiskAlert.level, RiskAlert.text, RiskAlert.created_at)
            .where(RiskAlert.account_id == account_id)
            .order_by(RiskAlert.created_at.desc(), RiskAlert.id.desc())
            .limit(MAX_ALERTS)
        )
        self.state["margin_limit"] = limit if limit is not None else Decimal(0)
        self.state["holdings"] = [
            {"symbol": t, "qty": q, "last": last, "margin_rate": rate, "sector": sector}
            for q, t, last, rate, sector in rows
        ]
        self.state["alerts"] = [
            {"level": level, "text": text, "ts": _epoch_ms(created)}
            for level, text, created in alerts
        ]
        _recompute(self.state)

    async def on_ws_message(self, message: dict[str, Any]) -> bool | None:
        event = message.get("event")
        if event == wire.EVENT_PRICE_TICK:
            return self._on_tick(message.get("prices") or {})
        if event == wire.EVENT_RISK_BREACH:
            self._on_breach(message)
        elif event == wire.EVENT_ORDER:
            await self.remount()
        return None

    def _on_tick(self, prices: dict[str, Any]) -> bool:
        moved = price_moves(self.state.get("holdings", []), prices)
        for holding, _, last in moved:
            holding["last"] = last
        if moved:
            _recompute(self.state)
        return bool(moved)

    def _on_breach(self, message: dict[str, Any]) -> None:
        level = message.get("level")
        if level not in _LEVELS:
            return
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

    def _views(self) -> dict[str, Any]:
        """The formatted views, computed once per change of state (a tick, an alert)."""
        stamp = (id(self.state), self.state.get("_version", 0))
        cached = getattr(self, "_cached_views", None)
        if cached is None or cached[0] != stamp:
            alerts = self.state.get("alerts", [])
            # alerts change on a breach, not on a tick: their view is kept until they do
            newest = (alerts[0].get("ts"), alerts[0].get("text")) if alerts else None
            alerts_key = (id(alerts), len(alerts), newest)
            old_alerts = getattr(self, "_alerts_view", None)
            if old_alerts is None or old_alerts[0] != alerts_key:
                old_alerts = self._alerts_view = (alerts_key, _alerts_view(self.state))
            gauge = _gauge_view(self.state)
            views = {
                "gauge": gauge,
                "summary": _summary_view(gauge, self.state),
                "exposure": _exposure_view(self.state),
                "alerts": old_alerts[1],
            }
            cached = self._cached_views = (stamp, views)
        result: dict[str, Any] = cached[1]
        return result

    def get_context(self) -> dict[str, Any]:
        return {"exposure_id": EXPOSURE_ID, "alerts_id": ALERTS_ID, **self._views()}

    def live_parts(self) -> dict[str, PartSpec]:
        views = self._views()
        parts: dict[str, PartSpec] = {GAUGE_ID: ("gauge", {"v": views["gauge"]})}
        for sector in views["exposure"]:  # parts per sector: only what moved is sent
            parts[sector["fig"]["id"]] = ("sector_fig", {"v": sector["fig"]})
            parts[sector["bar"]["id"]] = ("sector_bar", {"v": sector["bar"]})
        parts[ALERTS_ID] = ("alerts", {"alerts": views["alerts"]})
        parts[SUMMARY_ID] = ("summary", {"v": views["summary"]})
        return parts
