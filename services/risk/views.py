"""The risk panel's views: its numbers formatted, kept between changes and brought up to
date in place, so a tick formats again only the figures and names the parts it changed."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_DOWN, ROUND_HALF_UP, Decimal
from functools import cache, lru_cache
from typing import Any

from services.risk.state import LEVELS, RiskState, SectorRow
from shared import domain, wire
from shared.charts import bar_width
from shared.components import PartSpec
from shared.components.formatting import money

__all__ = ["ALERTS_ID", "EXPOSURE_ID", "GAUGE_ID", "SUMMARY_ID", "Views", "refresh", "views_of"]

GAUGE_ID = wire.element_id("risk_metrics", "gauge")
EXPOSURE_ID = wire.element_id("risk_metrics", "exposure")
ALERTS_ID = wire.element_id("risk_metrics", "alerts")
SUMMARY_ID = wire.element_id("risk_metrics", "summary")  # in the page's header
_TENTH = Decimal("0.1")


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
                "level": alert["level"] if alert.get("level") in LEVELS else "warn",
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
class Views:
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


def views_of(state: RiskState) -> Views:
    gauge = _gauge_view(state)
    rows = sorted(state.get("sector_exposure", []), key=lambda r: r["sector"] or "Other")
    exposure = [_sector_view(row) for row in rows]
    views = Views(
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


def refresh(views: Views) -> list[str] | None:
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
