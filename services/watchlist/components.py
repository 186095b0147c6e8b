"""WatchlistComponent: the trader's symbols with live bid/ask/last (the seed's component)."""

from __future__ import annotations

from typing import Any, Literal

from sqlalchemy import delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert

from shared import domain, wire
from shared.charts import sparkline_points
from shared.components import Component, FieldError, IsAuthenticated, Registry
from shared.db.models import Symbol, WatchlistItem
from shared.ticks import tick_field, tick_last

__all__ = ["SPARK_POINTS", "WatchlistComponent", "registry"]

registry = Registry()

SPARK_POINTS = 30
MAX_SUGGESTIONS = 8


def _item(symbol: Symbol) -> dict[str, Any]:
    history = [symbol.prev_close, symbol.last]
    return {
        "id": wire.element_id("watchlist", "row", symbol.ticker),
        "ticker": symbol.ticker,
        "name": symbol.name,
        "bid": symbol.bid,
        "ask": symbol.ask,
        "last": symbol.last,
        "chg_pct": domain.change_pct(symbol.last, symbol.prev_close),
        "dir": "",
        "history": history,
        "spark": sparkline_points(history),
    }


@registry.register("watchlist")
class WatchlistComponent(Component):
    template_name = "components/watchlist.html"
    permission_classes = [IsAuthenticated]
    subscriptions = {wire.PRICES_TICKS: wire.EVENT_PRICE_TICK}
    page_only_events = frozenset({"suggest"})

    async def mount(self) -> None:
        rows = await self.session.scalars(
            select(Symbol)
            .join(WatchlistItem, WatchlistItem.symbol_id == Symbol.id)
            .where(WatchlistItem.user_id == self.request.user.user_id)
            .order_by(WatchlistItem.rank, Symbol.ticker)
        )
        fresh = {"items": [_item(symbol) for symbol in rows]}
        _keep_history(fresh, self.state)  # a reload keeps the live history
        self.state["items"] = fresh["items"]
        self.state.setdefault("suggestions", [])

    def adopt(self, state: dict[str, Any]) -> None:
        """Keep the live price history of rows that survive an add/remove/move."""
        _keep_history(state, self.state)
        self.state = state

    async def _symbol(self, ticker: str) -> Symbol:
        wanted = ticker.strip().upper()
        if not wanted:
            raise FieldError("ticker", "Enter a ticker symbol")
        symbol = await self.session.scalar(select(Symbol).where(Symbol.ticker == wanted))
        if symbol is None:
            raise FieldError("ticker", f"Unknown symbol: {wanted[:12]}")
        return symbol

    async def on_add_symbol(self, ticker: str) -> None:
        symbol = await self._symbol(ticker)
        user_id = self.request.user.user_id
        next_rank = select(func.coalesce(func.max(WatchlistItem.rank) + 1, 0)).where(
            WatchlistItem.user_id == user_id
        )
        await self.session.execute(
            insert(WatchlistItem)
            .values(user_id=user_id, symbol_id=symbol.id, rank=next_rank.scalar_subquery())
            .on_conflict_do_nothing(index_elements=["user_id", "symbol_id"])
        )
        self.state["suggestions"] = []
        await self.remount()

    async def on_remove_symbol(self, ticker: str) -> None:
        symbol = await self._symbol(ticker)
        await self.session.execute(
            delete(WatchlistItem).where(
                WatchlistItem.user_id == self.request.user.user_id,
                WatchlistItem.symbol_id == symbol.id,
            )
        )
        await self.remount()

    async def on_move(self, ticker: str, direction: Literal["up", "down"]) -> None:
        symbol = await self._symbol(ticker)
        items = (
            await self.session.scalars(
                select(WatchlistItem)
                .where(WatchlistItem.user_id == self.request.user.user_id)
                .order_by(WatchlistItem.rank, WatchlistItem.id)
                .with_for_update()
            )
        ).all()
        index = next((i for i, it in enumerate(items) if it.symbol_id == symbol.id), None)
        if index is None:
            raise FieldError("ticker", f"{symbol.ticker} is not on your watchlist")
        other = index - 1 if direction == "up" else index + 1
        if 0 <= other < len(items):
            order = list(items)
            order[index], order[other] = order[other], order[index]
            for rank, item in enumerate(order):
                item.rank = rank
        await self.remount()

    async def on_suggest(self, ticker: str = "") -> None:
        prefix = ticker.strip()
        if not prefix:
            self.state["suggestions"] = []
            return
        held = {i["ticker"] for i in self.state.get("items", [])}
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = await self.session.execute(
            select(Symbol.ticker, Symbol.name)
            .where(or_(Symbol.ticker.ilike(f"{escaped}%"), Symbol.name.ilike(f"{escaped}%")))
            .order_by(Symbol.ticker)
            .limit(MAX_SUGGESTIONS + len(held))
        )
        self.state["suggestions"] = [{"ticker": t, "name": n} for t, n in rows if t not in held][
            :MAX_SUGGESTIONS
        ]

    async def on_ws_message(self, message: dict[str, Any]) -> bool | None:
        if message.get("event") != wire.EVENT_PRICE_TICK:
            return None
        ticks = message["prices"]
        changed = False
        for item in self.state.get("items", []):
            quote = ticks.get(item["ticker"])
            if quote is None:
                continue
            changed = True  # bid/ask may move without last: the parts diff decides
            last = tick_last(quote)
            old = domain.dec(item["last"])
            if isinstance(quote, dict):
                item["bid"] = tick_field(quote, "bid")
                item["ask"] = tick_field(quote, "ask")
                item["chg_pct"] = tick_field(quote, "chg_pct")
            if last != old:
                item["dir"] = "up" if last > old else "down"
                item["last"] = last
                item["history"] = [*item["history"], last][-SPARK_POINTS:]
                item["spark"] = sparkline_points(item["history"])
        return changed

    def live_parts(self) -> dict[str, tuple[str, dict[str, Any]]]:
        return {
            item["id"]: ("row", {"item": _row_view(item)}) for item in self.state.get("items", [])
        }


def _keep_history(state: dict[str, Any], previous: dict[str, Any]) -> None:
    old = {i["ticker"]: i for i in previous.get("items", [])}
    for item in state.get("items", []):
        if item["ticker"] in old:
            item["history"] = old[item["ticker"]]["history"]
            item["spark"] = old[item["ticker"]]["spark"]


def _row_view(item: dict[str, Any]) -> dict[str, Any]:
    """What a row renders from (history is drawn through ``spark``, not repeated)."""
    return {k: v for k, v in item.items() if k != "history"}
