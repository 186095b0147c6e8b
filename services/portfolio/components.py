"""PortfolioComponent: the account's open positions with live P&L (the seed's component).

A row's last price looks the same to everyone holding the symbol: it is a shared part,
rendered once per tick (:meth:`PortfolioComponent.topic_parts`). What is the trader's own
(P&L and day change per row, the totals) is arithmetic and formatting into a stencil.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any, NotRequired, TypedDict

from sqlalchemy import BindParameter, bindparam

from shared import domain, wire
from shared.components import Component, IsAuthenticated, PriceBook, Registry
from shared.components.base import LiveResult
from shared.components.formatting import money, signed
from shared.components.rendering import Part, stencil_parts
from shared.db.models import Account, Position, Symbol
from shared.db.queries import account_and_positions
from shared.db.reads import Read
from shared.ticks import price_direction, price_moves

__all__ = [
    "SUMMARY_ID",
    "TOTALS_ID",
    "PortfolioComponent",
    "PortfolioState",
    "PositionRow",
    "registry",
]

registry = Registry()

TOTALS_ID = wire.element_id("portfolio", "totals")
LAST_FIELDS = ("id", "symbol", "last", "flash")
PL_FIELDS = ("id", "pnl", "pnl_cls", "day", "day_cls")
TOTALS_FIELDS = ("id", "value", "pnl", "pnl_cls", "day", "day_cls")
SUMMARY_ID = wire.element_id("portfolio", "summary")  # in the page's header
SUMMARY_FIELDS = ("id", "value", "cash")

_ZERO = Decimal(0)
_ACCOUNT: BindParameter[int] = bindparam("account_id")
_CASH_AND_POSITIONS = Read(
    account_and_positions(
        (Account.cash,),
        Position.quantity,
        Position.avg_cost,
        Symbol.ticker,
        Symbol.last,
        Symbol.prev_close,
        account_id=_ACCOUNT,
    ).order_by(Symbol.ticker)
)


class PositionRow(TypedDict):
    """One open position; ``pnl``, ``day_chg`` and ``pl`` follow its last price."""

    id: str
    symbol: str
    qty: int
    avg_cost: Decimal
    last: Decimal
    prev_close: Decimal | None
    dir: str  # how the last price last moved: "up", "down" or ""
    pnl: NotRequired[Decimal]
    day_chg: NotRequired[Decimal | None]
    pl: NotRequired[dict[str, str]]  # the trader's own cells, formatted (a live part)
    pl_id: NotRequired[str]


class PortfolioState(TypedDict, total=False):
    positions: list[PositionRow]
    cash: Decimal | None
    total_value: Decimal
    total_pnl: Decimal
    day_change: Decimal
    totals_view: dict[str, str]  # formatted, held by the live parts like each row's pl
    summary_view: dict[str, str]


def _row(ticker: str, qty: int, avg_cost: Any, last: Any, prev_close: Any) -> PositionRow:
    row: PositionRow = {
        "id": wire.element_id("portfolio", "row", ticker),
        "symbol": ticker,
        "qty": qty,
        "avg_cost": domain.dec(avg_cost),
        "last": domain.dec(last),
        "prev_close": domain.dec(prev_close) if prev_close is not None else None,
        "dir": "",
    }
    _price(row, row["last"])
    return row


def _price(row: PositionRow, last: Decimal) -> None:
    row["last"] = last
    qty = row["qty"]
    pnl = row["pnl"] = domain.position_pnl(last, domain.dec(row["avg_cost"]), qty)
    prev = row.get("prev_close")
    day = domain.day_change(last, domain.dec(prev), qty) if prev is not None else None
    row["day_chg"] = day
    pl = row.get("pl")
    if pl is None:
        row["pl"] = _pl_view(row)
    else:  # the live parts of :meth:`PortfolioComponent.live_parts` hold this dict
        _set_pl_cells(pl, pnl, day)


def _kept(current: dict[str, str] | None, view: dict[str, str]) -> dict[str, str]:
    """``view``, written into the dict ``current`` when there is one (the live parts of
    :meth:`PortfolioComponent.live_parts` hold it)."""
    if current is None:
        return view
    current.update(view)
    return current


def _sign_class(shown: str) -> str:
    """A figure's colour, from the figure as shown (rounded: "+0.00" is no loss)."""
    return "pnl-neg" if shown.startswith("-") else "pnl-pos"


def _pl_view(row: PositionRow) -> dict[str, str]:
    """The trader's own cells of a row, formatted."""
    pl_id = row.get("pl_id")
    if pl_id is None:
        pl_id = row["pl_id"] = wire.element_id("portfolio", "pl", row["symbol"])
    day = row.get("day_chg")
    return {
        "id": pl_id,
        **_pl_cells(domain.dec(row["pnl"]), domain.dec(day) if day is not None else None),
    }


def _pl_cells(pnl: Decimal, day: Decimal | None) -> dict[str, str]:
    """What a price move changes in a row's :func:`_pl_view`."""
    cells: dict[str, str] = {}
    _set_pl_cells(cells, pnl, day)
    return cells


def _set_pl_cells(cells: dict[str, str], pnl: Decimal, day: Decimal | None) -> None:
    """:func:`_pl_cells`, written into ``cells`` (on every tick, for every row that moved)."""
    cells["pnl"] = text = signed(pnl)
    cells["pnl_cls"] = _sign_class(text)
    if day is None:
        cells["day"] = cells["day_cls"] = ""
    else:
        cells["day"] = text = signed(day)
        cells["day_cls"] = _sign_class(text)


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


def _totals_view(state: PortfolioState) -> dict[str, str]:
    pnl, day = signed(state.get("total_pnl")), signed(state.get("day_change"))
    return {
        "id": TOTALS_ID,
        "value": money(state.get("total_value")),
        "pnl": pnl,
        "pnl_cls": _sign_class(pnl),
        "day": day,
        "day_cls": _sign_class(day),
    }


def _summary_view(state: PortfolioState) -> dict[str, str]:
    """The header's account value (cash plus the positions' market value) and cash."""
    cash = domain.dec(state.get("cash") or 0)
    return {
        "id": SUMMARY_ID,
        "value": money(cash + domain.dec(state.get("total_value") or 0)),
        "cash": money(cash),
    }


def _holding(pos: PositionRow) -> domain.Holding:
    prev = pos.get("prev_close")
    return domain.Holding(
        pos["symbol"],
        pos["qty"],
        domain.dec(pos["last"]),
        avg_cost=domain.dec(pos["avg_cost"]),
        prev_close=domain.dec(prev) if prev is not None else None,
    )


@registry.register("portfolio")
class PortfolioComponent(Component[PortfolioState]):
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
        rows = await _CASH_AND_POSITIONS.rows(self.session, account_id=self.request.user.account_id)
        self.state["positions"] = [
            _row(ticker, qty, avg_cost, last, prev_close)
            for _cash, qty, avg_cost, ticker, last, prev_close in rows
            if qty is not None  # (an account without positions: one row, its cash)
        ]
        self.state["cash"] = rows[0][0] if rows else None
        self._totals()

    def _totals(self) -> None:
        holdings = [_holding(p) for p in self.state["positions"]]
        self.state["total_value"] = domain.total_value(holdings)
        self.state["total_pnl"] = domain.total_pnl(holdings)
        self.state["day_change"] = domain.total_day_change(holdings)
        self._keep_views()

    def _keep_views(self) -> None:
        state = self.state
        state["totals_view"] = _kept(state.get("totals_view"), _totals_view(state))
        state["summary_view"] = _kept(state.get("summary_view"), _summary_view(state))

    def _move_totals(self, move: Decimal, day_move: Decimal) -> None:
        """Totals after a tick moved prices: market value and P&L by ``move`` (the sum of
        :func:`domain.price_move` over the rows that moved), the day change by
        ``day_move`` (the same over rows with a previous close). Exact, without a re-sum."""
        state = self.state
        value, pnl, day = state.get("total_value"), state.get("total_pnl"), state.get("day_change")
        if value is None or pnl is None or day is None:
            self._totals()
            return
        state["total_value"] = domain.dec(value) + move
        state["total_pnl"] = domain.dec(pnl) + move
        state["day_change"] = domain.dec(day) + day_move
        self._keep_views()

    async def on_ws_message(self, message: dict[str, Any]) -> LiveResult:
        event = message.get("event")
        if event == wire.EVENT_PRICE_TICK:
            moved = price_moves(self.state["positions"], message["prices"])
            if not moved:
                return False
            changed: dict[str, None] = {}  # part ids, in row order
            move = day_move = _ZERO
            for pos, old, last in moved:
                pos["dir"] = price_direction(old, last)
                _price(pos, last)
                changed[pos["pl"]["id"]] = None
                row_move = domain.price_move(old, last, pos["qty"])
                move += row_move
                if pos.get("prev_close") is not None:
                    day_move += row_move
            self._move_totals(move, day_move)
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
