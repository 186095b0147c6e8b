"""Example components exercising every framework feature (names match wire.ID_PREFIX)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator
from sqlalchemy import insert

from shared import wire
from shared.components import (
    Component,
    FieldError,
    FormComponent,
    HasTradingPermission,
    IsAuthenticated,
    Registry,
)
from shared.db.models import RateLimitHit

registry = Registry()

PRICES = {"AAPL": 190.0, "MSFT": 410.0, "NVDA": 120.0}
MOUNTS: list[int] = []  # account ids, one per real mount (cache tests count them)


async def audit(component: Component, what: str) -> None:
    """A write through the framework's transaction (a row anyone can count)."""
    if component.request.db is not None:
        await component.session.execute(insert(RateLimitHit).values(key=f"audit:{what}", at=_now()))


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime.now(UTC)


@registry.register("portfolio")
class Portfolio(Component):
    template_name = "components/portfolio.html"
    permission_classes = [IsAuthenticated]
    cache_key_prefix = "ex-portfolio"
    cache_ttl = 5
    subscriptions = {
        wire.PRICES_TICKS: wire.EVENT_PRICE_TICK,
        wire.ORDERS_EVENTS_TEMPLATE: wire.EVENT_ORDER,
    }

    def mount(self) -> None:
        MOUNTS.append(int(self.request.user.account_id or 0))
        self.state["positions"] = [
            {"symbol": "AAPL", "qty": 10, "avg_cost": 180.0, "last": 180.0, "pnl": 0.0},
            {"symbol": "MSFT", "qty": 5, "avg_cost": 400.0, "last": 400.0, "pnl": 0.0},
        ]
        self._total()

    def _total(self) -> None:
        self.state["total_value"] = sum(p["last"] * p["qty"] for p in self.state["positions"])

    async def on_ws_message(self, message: dict[str, Any]) -> None:
        if message.get("event") == wire.EVENT_PRICE_TICK:
            if message.get("explode"):
                raise RuntimeError("boom in tick")
            ticks = message["prices"]
            for pos in self.state["positions"]:
                if pos["symbol"] in ticks:
                    pos["last"] = ticks[pos["symbol"]]
                    pos["pnl"] = (pos["last"] - pos["avg_cost"]) * pos["qty"]
            self._total()
        elif message.get("event") == wire.EVENT_ORDER:
            symbol = message["symbol"]
            if all(p["symbol"] != symbol for p in self.state["positions"]):
                last = PRICES.get(symbol, 1.0)
                self.state["positions"].append(
                    {"symbol": symbol, "qty": message["qty"], "avg_cost": last,
                     "last": last, "pnl": 0.0}
                )  # fmt: skip
                self._total()

    def on_refresh(self) -> None:
        self.invalidate_cache()

    def live_parts(self) -> dict[str, tuple[str, dict[str, Any]]]:
        parts: dict[str, tuple[str, dict[str, Any]]] = {
            wire.element_id("portfolio", "row", p["symbol"]): ("row", {"pos": p})
            for p in self.state["positions"]
        }
        parts[wire.element_id("portfolio", "total")] = (
            "total",
            {"total_value": self.state["total_value"]},
        )
        return parts


class OrderSchema(BaseModel):
    symbol: str
    side: Literal["buy", "sell"]
    quantity: Annotated[int, Field(gt=0, le=10_000)]
    order_type: Literal["market", "limit"] = "market"
    limit_price: float | None = None

    @model_validator(mode="after")
    def _limit(self) -> OrderSchema:
        if self.order_type == "limit" and not self.limit_price:
            raise ValueError("limit_price is required for limit orders")
        return self


@registry.register("order")
class Order(FormComponent):
    schema = OrderSchema
    template_name = "components/order.html"
    permission_classes = [IsAuthenticated, HasTradingPermission]
    rate_limit = "3/minute"

    def mount(self) -> None:
        self.state["status"] = "new"
        self.state["count"] = 0

    def get_optimistic_patch(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        if event == "submit":
            return {"status": "pending", "message": "Sending order…"}
        return {}

    async def on_submit(self) -> None:
        data = self.validated_data
        self.state["status"] = "half-done"
        await audit(self, f"order:{data['symbol']}")
        if data["symbol"] not in PRICES:
            raise FieldError("symbol", f"Unknown symbol: {data['symbol']}")
        if data["quantity"] == 13:
            raise RuntimeError("unlucky quantity")
        self.state["count"] += 1
        self.state["status"] = "submitted"
        self.state["message"] = f"Order for {data['quantity']} {data['symbol']} submitted"
        self.on_commit(lambda: COMMITTED.append(data["symbol"]))


COMMITTED: list[str] = []


@registry.register("watchlist")
class Watchlist(Component):
    template_name = "components/watchlist.html"
    permission_classes = [IsAuthenticated]
    subscriptions = {wire.PRICES_TICKS: wire.EVENT_PRICE_TICK}

    async def mount(self) -> None:
        self.state["items"] = [{"ticker": "AAPL", "last": PRICES["AAPL"]}]

    def on_add_symbol(self, ticker: str, rank: int = 0) -> None:
        ticker = ticker.upper()
        if ticker not in PRICES:
            raise FieldError("ticker", f"Unknown symbol: {ticker}")
        self.state["items"].append({"ticker": ticker, "last": PRICES[ticker], "rank": rank})

    async def on_ws_message(self, message: dict[str, Any]) -> None:
        for item in self.state["items"]:
            if item["ticker"] in message.get("prices", {}):
                item["last"] = message["prices"][item["ticker"]]
