"""WatchlistComponent: the trader's symbols with live bid/ask/last (the seed's component)."""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any, Literal, TypedDict

from sqlalchemy import bindparam, delete, func, or_, select
from sqlalchemy.dialects.postgresql import insert

from shared import domain, wire
from shared.charts import sparkline_points
from shared.components import Component, FieldError, IsAuthenticated, PriceBook, Registry
from shared.components.formatting import money, signed
from shared.components.rendering import Part, stencil_parts
from shared.db.models import Symbol, User, WatchlistItem
from shared.db.reads import Read
from shared.ticks import tick_field, tick_last

__all__ = [
    "QUOTE_FIELDS",
    "SPARK_POINTS",
    "Suggestion",
    "WatchItem",
    "WatchlistComponent",
    "WatchlistState",
    "quote_view",
    "registry",
]

registry = Registry()

SPARK_POINTS = 30
MAX_SUGGESTIONS = 8


QUOTE_FIELDS = ("id", "symbol", "bid", "ask", "last", "flash", "chg", "chg_cls", "spark")


class WatchItem(TypedDict):
    """A row: what only this trader's list holds. Its quote comes from the price book."""

    id: str
    ticker: str
    name: str
    stored: tuple[Decimal, Decimal, Decimal, Decimal]  # last, bid, ask, prev_close


class Suggestion(TypedDict):
    ticker: str
    name: str


class WatchlistState(TypedDict, total=False):
    items: list[WatchItem]
    suggestions: list[Suggestion]
    errors: dict[str, str]  # the framework's, after a refused event (as are the values)
    values: dict[str, Any]


_ITEMS = Read(
    select(Symbol.ticker, Symbol.name, Symbol.last, Symbol.bid, Symbol.ask, Symbol.prev_close)
    .join(WatchlistItem, WatchlistItem.symbol_id == Symbol.id)
    .where(WatchlistItem.user_id == bindparam("user_id"))
    .order_by(WatchlistItem.rank, Symbol.ticker)
)


def _item(
    ticker: str, name: str, last: Decimal, bid: Decimal, ask: Decimal, prev_close: Decimal
) -> WatchItem:
    return {
        "id": wire.element_id("watchlist", "row", ticker),
        "ticker": ticker,
        "name": name,
        # as stored, for a component that runs without the service's price book
        "stored": (last, bid, ask, prev_close),
    }


def quote_view(ticker: str, quote: Any, direction: str, history: list[Decimal]) -> dict[str, str]:
    """A row's quote cells, formatted: the same for every trader who watches ``ticker``."""
    chg = tick_field(quote, "chg_pct")
    return {
        "id": wire.element_id("watchlist", "quote", ticker),
        "symbol": ticker,
        "bid": money(tick_field(quote, "bid")),
        "ask": money(tick_field(quote, "ask")),
        "last": money(tick_last(quote)),
        "flash": f" flash-{direction}" if direction else "",
        "chg": signed(chg),
        "chg_cls": "chg-pos" if chg >= 0 else "chg-neg",
        "spark": sparkline_points(history[-SPARK_POINTS:]),
    }


def book_view(book: PriceBook, ticker: str) -> dict[str, str] | None:
    """The quote cells of ``ticker`` from the service's price book (``None``: not in it),
    formatted once per quote for every watcher and mount (do not change them)."""
    quote = book.quote(ticker)
    if quote is None:
        return None
    return book.view(
        "watchlist.quote",
        ticker,
        lambda: quote_view(ticker, quote, book.direction(ticker), book.history(ticker)),
    )


def _stored_view(item: WatchItem) -> dict[str, str]:
    last, bid, ask, prev_close = (domain.dec(v) for v in item["stored"])
    quote = {"last": last, "bid": bid, "ask": ask, "chg_pct": domain.change_pct(last, prev_close)}
    return quote_view(item["ticker"], quote, "", [prev_close, last])


@registry.register("watchlist")
class WatchlistComponent(Component[WatchlistState]):
    template_name = "components/watchlist.html"
    permission_classes = [IsAuthenticated]
    subscriptions = {wire.PRICES_TICKS: wire.EVENT_PRICE_TICK}
    page_only_events = frozenset({"suggest"})
    stencils = {"quote": QUOTE_FIELDS}
    shared_by_topic = True  # a row's quote cells depend on nothing of the trader's

    async def mount(self) -> None:
        rows = await _ITEMS.rows(self.session, user_id=self.request.user.user_id)
        self.state["items"] = [_item(*row) for row in rows]
        self.state.setdefault("suggestions", [])

    def topics(self) -> list[str]:
        return [item["ticker"] for item in self.state.get("items", [])]

    @classmethod
    def topic_parts(cls, topics: Iterable[str], prices: PriceBook) -> dict[str, list[Part]]:
        """Each changed ticker's quote cells, rendered once for every watcher."""
        return stencil_parts(cls, "quote", {t: book_view(prices, t) for t in topics})

    def _quote_views(self) -> dict[str, dict[str, str]]:
        book = self.request.prices
        views = {}
        for item in self.state.get("items", []):
            view = book_view(book, item["ticker"]) if book is not None else None
            views[item["ticker"]] = view if view is not None else _stored_view(item)
        return views

    def get_context(self) -> dict[str, Any]:
        return {"quotes": self._quote_views()}

    async def _symbol(self, ticker: str) -> Symbol:
        wanted = ticker.strip().upper()
        if not wanted:
            raise FieldError("ticker", "Enter a ticker symbol")
        symbol = await self.session.scalar(select(Symbol).where(Symbol.ticker == wanted))
        if symbol is None:
            raise FieldError("ticker", f"Unknown symbol: {wanted[:12]}")
        return symbol

    async def _lock_list(self) -> None:
        """Take the user's row lock until commit: one change to a user's list at a time
        (two tabs adding at once each remounted without the other's symbol, and the later
        answer's list, adopted live, lost the earlier one; they also took the same rank)."""
        await self.session.execute(
            select(User.id).where(User.id == self.request.user.user_id).with_for_update()
        )

    async def on_add_symbol(self, ticker: str) -> None:
        symbol = await self._symbol(ticker)
        await self._lock_list()
        user_id = self.request.user.user_id
        next_rank = select(func.coalesce(func.max(WatchlistItem.rank) + 1, 0)).where(
            WatchlistItem.user_id == user_id
        )
        added = await self.session.scalar(
            insert(WatchlistItem)
            .values(user_id=user_id, symbol_id=symbol.id, rank=next_rank.scalar_subquery())
            .on_conflict_do_nothing(index_elements=["user_id", "symbol_id"])
            .returning(WatchlistItem.id)
        )
        if added is None:
            raise FieldError("ticker", f"{symbol.ticker} is already on your watchlist")
        self.state["suggestions"] = []
        await self.remount()

    async def on_remove_symbol(self, ticker: str) -> None:
        symbol = await self._symbol(ticker)
        await self._lock_list()
        await self.session.execute(
            delete(WatchlistItem).where(
                WatchlistItem.user_id == self.request.user.user_id,
                WatchlistItem.symbol_id == symbol.id,
            )
        )
        await self.remount()

    async def on_move(self, ticker: str, direction: Literal["up", "down"]) -> None:
        symbol = await self._symbol(ticker)
        await self._lock_list()
        items = (
            await self.session.scalars(
                select(WatchlistItem)
                .join(Symbol, Symbol.id == WatchlistItem.symbol_id)
                .where(WatchlistItem.user_id == self.request.user.user_id)
                .order_by(WatchlistItem.rank, Symbol.ticker)  # as shown (_ITEMS)
                .with_for_update(of=WatchlistItem)
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
        suggestions = [Suggestion(ticker=t, name=n) for t, n in rows if t not in held]
        self.state["suggestions"] = suggestions[:MAX_SUGGESTIONS]

    async def on_ws_message(self, message: dict[str, Any]) -> bool | None:
        # quotes are shared parts (topic_parts): a tick changes nothing of this trader's own
        return False

    def live_parts(self) -> dict[str, tuple[str, dict[str, Any]]]:
        return {item["id"]: ("row", {"item": item}) for item in self.state.get("items", [])}
