"""PortfolioComponent: the account's open positions with live P&L (the seed's component).

A row's last price looks the same to everyone holding the symbol: it is a shared part,
rendered once per tick (:meth:`PortfolioComponent.topic_parts`). What is the trader's own
(P&L and day change per row, the totals) is arithmetic and formatting into a stencil.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from sqlalchemy import select

from shared import domain, wire
from shared.components import Component, IsAuthenticated, PriceBook, Registry
from shared.components.base import LiveResult
from shared.components.rendering import Part, money, signed, stencil_parts
from shared.db.models import Account, Position, Symbol
from shared.ticks import tick_last

__all__ = ["SUMMARY_ID", "TOTALS_ID", "PortfolioComponent", "registry"]

registry = Registry()

TOTALS_ID = wire.element_id("portfolio", "totals")
LAST_FIELDS = ("id", "symbol", "last", "flash")
PL_FIELDS = ("id", "pnl", "pnl_cls", "day", "day_cls")
TOTALS_FIELDS = ("id", "value", "pnl", "pnl_cls", "day", "day_cls")
SUMMARY_ID = wire.element_id("portfolio", "summary")  # in the page's header
SUMMARY_FIELDS = ("id", "value", "cash")


def _row(ticker: str, qty: int, avg_cost: Any, last: Any, prev_close: Any) -> dict[str, Any]:
    row = {
        "id": wire.element_id("portfolio", "row", ticker),
        "symbol": ticker,
        "qty": qty,
        "avg_cost": domain.dec(avg_cost),
        "prev_close": domain.dec(prev_close) if prev_close is not None else None,
        "dir": "",
    }
    _price(row, domain.dec(last))
    return row


def _price(row: dict[str, Any], last: Decimal) -> None:
    row["last"] = last
    qty = row["qty"]
    row["pnl"] = domain.position_pnl(last, domain.dec(row["avg_cost"]), qty)
    prev = row.get("prev_close")
    row["day_chg"] = domain.day_change(last, domain.dec(prev), qty) if prev is not None else None
    _keep_view(row, "pl", _pl_view(row))


def _keep_view(holder: dict[str, Any], key: str, view: dict[str, str]) -> None:
    """Store ``view`` under ``key``, updating the dict already there in place (the live
    parts of :meth:`PortfolioComponent.live_parts` hold it)."""
    current = holder.get(key)
    if current is None:
        holder[key] = view
    else:
        current.update(view)


def _sign_class(value: Decimal | None) -> str:
    if value is None:
        return ""
    return "pnl-pos" if value >= 0 else "pnl-neg"


def _pl_view(row: dict[str, Any]) -> dict[str, str]:
    """The trader's own cells of a row, formatted."""
    pnl, day = row["pnl"], row.get("day_chg")
    pl_id = row.get("pl_id")
    if pl_id is None:
        pl_id = row["pl_id"] = wire.element_id("portfolio", "pl", row["symbol"])
    return {
        "id": pl_id,
        "pnl": signed(pnl),
        "pnl_cls": _sign_class(domain.dec(pnl)),
        "day": signed(day),
        "day_cls": _sign_class(domain.dec(day) if day is not None else None),
    }


def last_view(ticker: str, last: Any, direction: str) -> dict[str, str]:
    """A row's last-price cell: the same for everyone holding ``ticker``."""
    return {
        "id": wire.element_id("portfolio", "last", ticker),
        "symbol": ticker,
        "last": money(last),
        "flash": f" flash-{direction}" if direction else "",
    }


def _book_last_view(book: PriceBook, ticker: str) -> dict[str, str] | None:
    last = book.last(ticker)
    return None if last is None else last_view(ticker, last, book.direction(ticker))


def _totals_view(state: dict[str, Any]) -> dict[str, str]:
    pnl, day = state.get("total_pnl"), state.get("day_change")
    return {
        "id": TOTALS_ID,
        "value": money(state.get("total_value")),
        "pnl": signed(pnl),
        "pnl_cls": _sign_class(domain.dec(pnl or 0)),
        "day": signed(day),
        "day_cls": _sign_class(domain.dec(day or 0)),
    }


def _summary_view(state: dict[str, Any]) -> dict[str, str]:
    """The header's account value (cash plus the positions' market value) and cash."""
    cash = domain.dec(state.get("cash") or 0)
    return {
        "id": SUMMARY_ID,
        "value": money(cash + domain.dec(state.get("total_value") or 0)),
        "cash": money(cash),
    }


def _holding(pos: dict[str, Any]) -> domain.Holding:
    prev = pos.get("prev_close")
    return domain.Holding(
        pos["symbol"],
        pos["qty"],
        domain.dec(pos["last"]),
        avg_cost=domain.dec(pos["avg_cost"]),
        prev_close=domain.dec(prev) if prev is not None else None,
    )


@registry.register("portfolio")
class PortfolioComponent(Component):
    template_name = "components/portfolio.html"
    permission_classes = [IsAuthenticated]
    cache_key_prefix = "portfolio"
    cache_ttl = 5  # seconds — avoid DB hammering on tick storms
    subscriptions = {
        wire.PRICES_TICKS: wire.EVENT_PRICE_TICK,
        wire.ORDERS_EVENTS_TEMPLATE: wire.EVENT_ORDER,
    }
    stencils = {
        "last": LAST_FIELDS,
        "pl": PL_FIELDS,
        "totals": TOTALS_FIELDS,
        "summary": SUMMARY_FIELDS,
    }
    outside_root = frozenset({SUMMARY_ID})

    async def mount(self) -> None:
        rows = await self.session.execute(
            select(
                Position.quantity, Position.avg_cost, Symbol.ticker, Symbol.last, Symbol.prev_close
            )
            .join(Symbol, Position.symbol_id == Symbol.id)
            .where(Position.account_id == self.request.user.account_id, Position.quantity > 0)
            .order_by(Symbol.ticker)
        )
        self.state["positions"] = [
            _row(ticker, qty, avg_cost, last, prev_close)
            for qty, avg_cost, ticker, last, prev_close in rows
        ]
        self.state["cash"] = await self.session.scalar(
            select(Account.cash).where(Account.id == self.request.user.account_id)
        )
        self._totals()

    def _totals(self) -> None:
        holdings = [_holding(p) for p in self.state["positions"]]
        self.state["total_value"] = domain.total_value(holdings)
        self.state["total_pnl"] = domain.total_pnl(holdings)
        self.state["day_change"] = domain.total_day_change(holdings)
        _keep_view(self.state, "totals_view", _totals_view(self.state))
        _keep_view(self.state, "summary_view", _summary_view(self.state))

    def _move_totals(self, moved: list[tuple[Decimal, Decimal, dict[str, Any]]]) -> None:
        """Totals after a tick moved these rows' prices: exact, without a full re-sum."""
        state = self.state
        if any(state.get(k) is None for k in ("total_value", "total_pnl", "day_change")):
            self._totals()
            return
        value, pnl, day = (domain.dec(state[k]) for k in ("total_value", "total_pnl", "day_change"))
        for old, last, pos in moved:
            move = domain.price_move(old, last, pos["qty"])
            value += move
            pnl += move
            if pos.get("prev_close") is not None:
                day += move
        state["total_value"], state["total_pnl"], state["day_change"] = value, pnl, day
        _keep_view(state, "totals_view", _totals_view(state))
        _keep_view(state, "summary_view", _summary_view(state))

    async def on_ws_message(self, message: dict[str, Any]) -> LiveResult:
        event = message.get("event")
        if event == wire.EVENT_PRICE_TICK:
            ticks = message["prices"]
            changed: dict[str, None] = {}  # part ids, in row order
            moved = []
            for pos in self.state["positions"]:
                quote = ticks.get(pos["symbol"])
                if quote is None:
                    continue
                last = tick_last(quote)
                old = domain.dec(pos["last"])
                if last != old:
                    pos["dir"] = "up" if last > old else "down"
                    _price(pos, last)
                    moved.append((old, last, pos))
                    changed[pos["pl"]["id"]] = None
            if not changed:
                return False
            self._move_totals(moved)
            changed[TOTALS_ID] = None
            changed[SUMMARY_ID] = None
            return changed
        if event == wire.EVENT_ORDER:
            await self.remount()
        return None

    def topics(self) -> list[str]:
        return [pos["symbol"] for pos in self.state.get("positions", [])]

    @classmethod
    def topic_parts(cls, topics: Iterable[str], prices: PriceBook) -> dict[str, list[Part]]:
        """Each changed ticker's last-price cell, rendered once for every holder."""
        return stencil_parts(cls, "last", {t: _book_last_view(prices, t) for t in topics})

    def get_context(self) -> dict[str, Any]:
        positions = self.state.get("positions", [])
        return {
            "lasts": {p["symbol"]: last_view(p["symbol"], p["last"], p["dir"]) for p in positions},
            "pls": {p["symbol"]: p.get("pl") or _pl_view(p) for p in positions},
            "totals": _totals_view(self.state),
        }

    def live_parts(self) -> dict[str, tuple[str, dict[str, Any]]]:
        positions = self.state.get("positions", [])
        cached = getattr(self, "_live_parts", None)
        # the parts hold the rows' view dicts, updated in place on ticks: rebuilt only when
        # the rows themselves change (a remount, an adopted state)
        if cached is not None and cached[0] is positions and cached[1] == len(positions):
            parts: dict[str, tuple[str, dict[str, Any]]] = cached[2]
            return parts
        parts = {}
        for pos in positions:
            # the row's own cells; its price cells are parts of their own
            shape = {k: pos[k] for k in ("id", "symbol", "qty", "avg_cost")}
            parts[pos["id"]] = ("row", {"pos": shape})
            if pos.get("pl") is None:
                pos["pl"] = _pl_view(pos)
            parts[pos["pl"]["id"]] = ("pl", {"v": pos["pl"]})
        if self.state.get("totals_view") is None:
            self.state["totals_view"] = _totals_view(self.state)
        parts[TOTALS_ID] = ("totals", {"v": self.state["totals_view"]})
        if self.state.get("summary_view") is None:
            self.state["summary_view"] = _summary_view(self.state)
        parts[SUMMARY_ID] = ("summary", {"v": self.state["summary_view"]})
        self._live_parts = (positions, len(positions), parts)
        return parts
