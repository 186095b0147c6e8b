"""PortfolioComponent: the account's open positions with live P&L (the seed's component)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import select

from shared import domain, wire
from shared.components import Component, IsAuthenticated, Registry
from shared.db.models import Position, Symbol
from shared.ticks import tick_last

__all__ = ["PortfolioComponent", "registry"]

registry = Registry()

TOTALS_ID = wire.element_id("portfolio", "totals")


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
    row["pnl"] = domain.position_pnl(last, domain.dec(row["avg_cost"]), row["qty"])
    prev = row.get("prev_close")
    row["day_chg"] = domain.day_change(last, prev, row["qty"]) if prev is not None else None


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
        self._totals()

    def _totals(self) -> None:
        holdings = [_holding(p) for p in self.state["positions"]]
        self.state["total_value"] = domain.total_value(holdings)
        self.state["total_pnl"] = domain.total_pnl(holdings)
        self.state["day_change"] = domain.total_day_change(holdings)

    async def on_ws_message(self, message: dict[str, Any]) -> bool | None:
        event = message.get("event")
        if event == wire.EVENT_PRICE_TICK:
            ticks = message["prices"]
            changed = False
            for pos in self.state["positions"]:
                if pos["symbol"] not in ticks:
                    continue
                last = tick_last(ticks[pos["symbol"]])
                old = domain.dec(pos["last"])
                if last != old:
                    pos["dir"] = "up" if last > old else "down"
                    _price(pos, last)
                    changed = True
            if changed:
                self._totals()
            return changed
        if event == wire.EVENT_ORDER:
            await self.remount()
        return None

    def live_parts(self) -> dict[str, tuple[str, dict[str, Any]]]:
        parts: dict[str, tuple[str, dict[str, Any]]] = {
            pos["id"]: ("row", {"pos": pos}) for pos in self.state.get("positions", [])
        }
        totals = {k: self.state.get(k) for k in ("total_value", "total_pnl", "day_change")}
        parts[TOTALS_ID] = ("totals", {"state": totals})
        return parts
