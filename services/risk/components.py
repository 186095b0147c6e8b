"""RiskMetricsComponent: margin utilisation, sector exposure and live alerts (the seed's).

A tick moves margin used and the sector values by what it moved (exactly: the result is
a full recompute's), and formats again only the figures, naming the parts that changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal, Inexact, localcontext
from functools import cache, lru_cache
from typing import Any, NotRequired, TypedDict

from sqlalchemy import select

from shared import domain, wire
from shared.charts import bar_width
from shared.components import Component, IsAuthenticated, PartSpec, Registry
from shared.components.base import LiveResult
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
    _sector_values: dict[str, Decimal]  # exact market value per sector: what ticks move
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
    """Margin used and the sector values, summed over every holding."""
    holdings = _holdings(state)
    state["margin_used"] = domain.margin_used(holdings)
    state["_sector_values"] = domain.sector_values(holdings)
    _shares(state)


Move = tuple[HoldingRow, Decimal, Decimal]  # (holding, old last, new last)


def _move(state: RiskState, moved: Iterable[Move]) -> bool:
    """Margin used and the sector values moved by what a tick moved; False (the state
    untouched) without values to move or when a sum would round: a tick never drifts
    from what :func:`_recompute` would find."""
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


# the width of a bar showing a figure as shown (one decimal): few values, formatted once
_bar_width = lru_cache(maxsize=4096)(bar_width)


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
        "width": _bar_width(str(shown)),
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


def _sector_figures(row: SectorRow) -> tuple[str, str, str]:
    """A sector's name, value and share (one decimal) as shown."""
    share = str(domain.dec(row["share_pct"]).quantize(_TENTH, ROUND_HALF_UP))
    return row["sector"] or "Other", money(domain.dec(row["value"]), 0), share


def _sector_view(row: SectorRow) -> dict[str, Any]:
    """A sector's figures and its bar: the figures move with every price, the bar only
    when the share does."""
    sector, value, share = _sector_figures(row)
    fig_id, bar_id = _sector_ids(sector)
    return {
        "sector": sector,
        "fig": {"id": fig_id, "value": value, "share": share},
        "bar": {"id": bar_id, "sector": sector, "share": share, "width": _bar_width(share)},
    }


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


def _alerts_key(state: RiskState) -> tuple[Any, ...]:
    """What moves when an alert comes in (alerts change on a breach, not on a tick)."""
    alerts = state.get("alerts", [])
    newest = (alerts[0].get("ts"), alerts[0].get("text")) if alerts else None
    return (id(alerts), len(alerts), newest)


@dataclass(eq=False)
class _Views:
    """The formatted views of one state, kept between its changes and brought up to date
    in place (the live parts hold them)."""

    state: RiskState  # held, so its id is never another state's
    version: int
    gauge: dict[str, str]
    summary: dict[str, str]
    exposure: list[dict[str, Any]]  # sectors by name: a tick moves bars and figures, not rows
    sectors: dict[str, dict[str, Any]]  # the same, by name
    alerts_key: tuple[Any, ...]
    alerts: list[dict[str, Any]]
    parts: dict[str, PartSpec]


def _views_of(state: RiskState) -> _Views:
    gauge = _gauge_view(state)
    rows = sorted(state.get("sector_exposure", []), key=lambda r: r["sector"] or "Other")
    exposure = [_sector_view(row) for row in rows]
    views = _Views(
        state,
        state.get("_version", 0),
        gauge,
        _summary_view(gauge, state),
        exposure,
        {sector["sector"]: sector for sector in exposure},
        _alerts_key(state),
        _alerts_view(state),
        {},
    )
    parts: dict[str, PartSpec] = {GAUGE_ID: ("gauge", {"v": views.gauge})}
    for sector in exposure:  # parts per sector: only what moved is sent
        parts[sector["fig"]["id"]] = ("sector_fig", {"v": sector["fig"]})
        parts[sector["bar"]["id"]] = ("sector_bar", {"v": sector["bar"]})
    parts[ALERTS_ID] = ("alerts", {"alerts": views.alerts})
    parts[SUMMARY_ID] = ("summary", {"v": views.summary})
    views.parts = parts
    return views


def _refresh(views: _Views) -> list[str] | None:
    """Bring ``views`` up to their state, in place: the ids of the parts whose view
    changed (in part order), or None, the views untouched, when the sectors changed."""
    state = views.state
    figures = [_sector_figures(row) for row in state.get("sector_exposure", [])]
    shown = views.sectors
    if len(figures) != len(views.exposure) or any(f[0] not in shown for f in figures):
        return None
    changed: set[str] = set()
    gauge = _gauge_view(state)
    _update(views.gauge, gauge, changed)
    _update(views.summary, _summary_view(gauge, state), changed)
    for sector, value, share in figures:
        fig, bar = shown[sector]["fig"], shown[sector]["bar"]
        if fig["value"] != value or fig["share"] != share:
            fig["value"], fig["share"] = value, share
            changed.add(fig["id"])
        if bar["share"] != share:
            bar["share"], bar["width"] = share, _bar_width(share)
            changed.add(bar["id"])
    alerts_key = _alerts_key(state)
    if alerts_key != views.alerts_key:
        views.alerts_key, alerts = alerts_key, _alerts_view(state)
        if alerts != views.alerts:  # a remount reads the same alerts again
            views.alerts[:] = alerts
            changed.add(ALERTS_ID)
    views.version = state.get("_version", 0)
    return [pid for pid in views.parts if pid in changed]


def _update(view: dict[str, str], fresh: dict[str, str], changed: set[str]) -> None:
    if fresh != view:
        view.update(fresh)
        changed.add(view["id"])


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
    _kept: _Views | None = None  # the views as last published

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
        if not _move(self.state, moved):
            _recompute(self.state)
        return self._changed_parts()

    def _on_breach(self, message: dict[str, Any]) -> LiveResult:
        level = message.get("level")
        if level not in _LEVELS:
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

    def _views(self) -> _Views:
        """The formatted views, formatted again only where the state changed (a tick, an
        alert)."""
        views = self._kept
        if views is None or views.state is not self.state:
            views = self._kept = _views_of(self.state)
        elif views.version != self.state.get("_version", 0) and _refresh(views) is None:
            views = self._kept = _views_of(self.state)
        return views

    def _changed_parts(self) -> LiveResult:
        """The parts a change of the state changed, since the views were last brought up
        to date (the last publication); None ("compare") when they were kept for another
        state or the sectors changed."""
        views = self._kept
        if views is None or views.state is not self.state:
            return None
        changed = _refresh(views)
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
