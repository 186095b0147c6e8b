"""OrderComponent: order entry with validation, pre-trade checks and immediate execution.

``state["status"]`` is the form's status as the seed defines it: the optimistic patch
shows ``pending``, the server answers ``submitted`` once it has accepted the order. What
then happened to the order (``filled`` / ``open``) is ``state["order_status"]`` and the
message ("Order #12 filled: bought 10 AAPL @ 229.88").
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, TypedDict, cast

from sqlalchemy import select

from services.orders import domain as rules
from services.orders.booking import order_event, place_filled
from services.orders.execution import (
    announce,
    assess_order,
    cancel,
    find_symbol,
    insert_open_order,
    lock_account_and_find,
    lock_position,
    lock_position_and_holdings,
)
from services.orders.notices import Notice, notice_of, with_notice
from services.orders.queries import OrderRow, order_rows, placed_order
from services.orders.schema import OrderSchema, new_client_order_id
from services.orders.settings import OrdersDeps
from services.orders.venue import ORDER_METRICS
from shared import failpoints, wire
from shared.components import (
    FieldError,
    FormComponent,
    HasTradingPermission,
    IsAuthenticated,
    PartSpec,
    Registry,
)
from shared.db.models import Account, Order, Position, Symbol
from shared.observability import when_answered
from shared.ticks import checked_entry

__all__ = [
    "NOTICES_ID",
    "OPEN_ID",
    "RECENT_ID",
    "RECENT_LIMIT",
    "Confirmation",
    "OrderComponent",
    "OrderSchema",
    "OrderState",
    "registry",
]

registry = Registry()

RECENT_LIMIT = 50  # the order history
OPEN_LIMIT = 50
OPEN_ID = wire.element_id("order", "open")
RECENT_ID = wire.element_id("order", "recent")
NOTICES_ID = wire.element_id("order", "notices")


class Confirmation(TypedDict):
    intent: str  # the one order confirmed (:func:`services.orders.domain.intent_of`)
    text: str


class OrderState(TypedDict, total=False):
    status: str  # the form's: "", "pending" (optimistic), "submitted" or "confirm"
    order_status: str | None  # the order's: "filled", "open", "cancelled", … or "confirm"
    order_id: int | None
    message: str
    client_order_id: str
    confirm: Confirmation
    symbols: list[str]
    open_orders: list[OrderRow]
    recent_orders: list[OrderRow]
    notices: list[Notice]
    whatif: dict[str, Any] | None  # the ticket's what-if lines, or a note why there are none
    errors: dict[str, str]  # the framework's, after a refused event
    values: dict[str, Any]  # what the trader entered, shown again with the errors


@registry.register("order")
class OrderComponent(FormComponent[OrderState]):
    schema = OrderSchema
    template_name = "components/order.html"
    permission_classes = [IsAuthenticated, HasTradingPermission]
    rate_limit = "60/minute"  # comply with exchange rules
    subscriptions = {wire.ORDERS_EVENTS_TEMPLATE: wire.EVENT_ORDER}
    live_root = False  # a live full render is the order lists, never the form being typed in
    page_only_events = frozenset({"whatif"})

    def get_optimistic_patch(self, event: str, payload: dict[str, Any]) -> dict[str, Any]:
        # Instant UI feedback before the server round-trip completes
        if event == "submit":
            return {"status": "pending", "message": "Sending order…"}
        return {}

    # -- state -----------------------------------------------------------------------
    async def mount(self) -> None:
        self.state.update(
            {
                "status": "",
                "order_status": None,
                "order_id": None,
                "message": "",
                "client_order_id": new_client_order_id(),
            }
        )
        self.state.setdefault("notices", [])
        self.state.setdefault("whatif", None)
        # an event's answer replaces only the desk (the template's hx-select): not the list
        # of symbols (17 KB for 565 symbols), nor the notices and order lists, which are
        # live parts. Those lists are read only after a change, for the live instance to
        # adopt: by every handler that answers 200 (what-if is page-only, never adopted).
        if self.answering:
            self.state.update({"symbols": [], "open_orders": [], "recent_orders": []})
            return
        self.state["symbols"] = await self.deps.tickers.get(self.session)
        await self._load_orders()

    async def _load_orders(self) -> None:
        account_id = int(self.request.user.account_id or 0)
        self.state["open_orders"], self.state["recent_orders"] = await order_rows(
            self.session, account_id, OPEN_LIMIT, RECENT_LIMIT
        )

    def get_context(self) -> dict[str, Any]:
        return {"open_id": OPEN_ID, "recent_id": RECENT_ID, "notices_id": NOTICES_ID}

    def adopt(self, state: OrderState) -> None:
        # the notices are the live instance's own (an event's fresh mount has none), and an
        # event may have ended a resting order (a cancel from another tab)
        resting = {o["id"]: o for o in self.state.get("open_orders", [])}
        notices = self.state.get("notices", [])
        self.state = state
        self.state["notices"] = notices
        still = {o["id"] for o in state.get("open_orders", [])}
        for row in state.get("recent_orders", []):
            if row["id"] in resting and row["id"] not in still:
                self._notice(notice_of(resting[row["id"]], row["status"], row["price"], None))

    def _notice(self, notice: Notice | None) -> None:
        self.state["notices"] = with_notice(self.state.get("notices", []), notice)

    def live_parts(self) -> dict[str, PartSpec]:
        # Only the order lists update live; the form is never replaced under the trader.
        return {
            OPEN_ID: ("open_orders", {"orders": self.state.get("open_orders", [])}),
            RECENT_ID: ("recent_orders", {"orders": self.state.get("recent_orders", [])}),
            NOTICES_ID: ("notices", {"notices": self.state.get("notices", [])}),
        }

    async def on_ws_message(self, message: dict[str, Any]) -> None:
        if message.get("event") == wire.EVENT_ORDER:
            if self._shows(message.get("order_id"), message.get("status")):
                return  # this tab's own order: the event's answer already gave the lists
            resting = {o["id"]: o for o in self.state.get("open_orders", [])}
            await self._load_orders()
            was = resting.get(message.get("order_id", 0))
            if was is not None:
                status, price = message.get("status"), message.get("price")
                self._notice(notice_of(was, status, price, message.get("ts")))

    def _shows(self, order_id: Any, status: Any) -> bool:
        """Whether the lists show ``order_id`` with ``status`` already (the live instance
        took the lists of the event that placed or cancelled it: no read needed)."""
        rows = [*self.state.get("open_orders", []), *self.state.get("recent_orders", [])]
        return any(o["id"] == order_id and o["status"] == status for o in rows)

    def _answer(self, order: Order, message: str) -> None:
        self.state.update(
            {
                "status": "submitted",
                "order_status": order.status,
                "order_id": order.id,
                "message": message,
                "client_order_id": new_client_order_id(),  # a re-render cannot submit it twice
            }
        )

    @property
    def deps(self) -> OrdersDeps:
        deps = self.request.deps
        return deps if isinstance(deps, OrdersDeps) else OrdersDeps()

    def _quote(self, symbol: Symbol) -> tuple[Decimal, Decimal]:
        """Bid and ask to trade at: the latest tick the service has seen, else the table's.

        The symbols table trails the feed by up to a write interval; a feed that has gone
        silent (or never ticked since this service started) means no price can be
        trusted, so nothing is executed against it.
        """
        book = self.request.prices
        if book is None:  # no live price book (a service without a bus): the table
            return symbol.bid, symbol.ask
        if book.silent_for() > self.deps.max_feed_silence_s:
            raise FieldError("__all__", "Market data is delayed; no order was placed. Try again.")
        quote = book.quote(symbol.ticker)
        if quote is None:  # unchanged since this service started: the table is current
            return symbol.bid, symbol.ask
        try:
            checked = checked_entry(quote)
        except ValueError:
            raise FieldError(
                "__all__", f"No valid price for {symbol.ticker} right now; no order was placed."
            ) from None
        return checked.bid, checked.ask

    def _recheck(self, ticker: str, side: str, limit: Decimal) -> None:
        """A resting order just committed: if the latest quote crosses it (a tick arrived
        while it was placed), the venue matches it now (:meth:`Venue.recheck`)."""
        book, recheck = self.request.prices, self.deps.recheck
        if book is None or recheck is None or (quote := book.quote(ticker)) is None:
            return
        try:
            checked = checked_entry(quote)
        except ValueError:
            return  # not a valid quote: the next tick's is matched
        if rules.crosses(side, limit, checked.bid, checked.ask):
            recheck({ticker: (checked.bid, checked.ask)})

    def _publish_after_commit(self, order: Order, ticker: str) -> None:
        announce(self.session, order.account_id, order_event(order, ticker))
        self._wake_relay_after_commit()

    def _wake_relay_after_commit(self) -> None:
        relay = self.deps.outbox
        if relay is not None:
            self.on_commit(relay.wake)

    # -- events ----------------------------------------------------------------------
    async def on_submit(self) -> None:
        when_answered(ORDER_METRICS.answered)  # submit → ack, whatever the answer
        data = self.validated_data
        session, account_id = self.session, int(self.request.user.account_id or 0)
        try:  # the account's lock serialises its orders
            account, symbol, existing = await lock_account_and_find(
                session, account_id, data["symbol"], data["client_order_id"]
            )
        except rules.Rejected as exc:
            raise FieldError(exc.field, exc.reason) from None
        if existing is not None:
            await self._answer_existing(data, existing)
            return
        if symbol is None:
            raise FieldError("symbol", f"Unknown symbol: {data['symbol']}")
        side, qty, limit = data["side"], data["quantity"], data["limit_price"]
        bid, ask = self._quote(symbol)
        price = rules.fill_price(side, limit if data["order_type"] == "limit" else None, bid, ask)
        if side == "buy":  # the position and the margin's holdings: one read
            position, held = await lock_position_and_holdings(session, account_id, symbol.id)
        else:
            position, held = await lock_position(session, account_id, symbol.id), None
        assessment = await assess_order(
            session, account, symbol, position, side, qty, limit if price is None else price, held
        )
        if assessment.refusal is not None:
            raise FieldError(assessment.refusal.field, assessment.refusal.reason)
        if self._needs_confirmation(assessment, data):
            await self._load_orders()  # adopted by the live instance with this answer
            return

        columns = {
            "account_id": account_id,
            "client_order_id": data["client_order_id"],
            "symbol_id": symbol.id,
            "side": side,
            "order_type": data["order_type"],
            "quantity": qty,
            "limit_price": limit,
        }
        if price is None:
            order = await insert_open_order(session, columns)
        else:
            try:  # filled at once: the order, its fill and its event in one statement
                order = await place_filled(session, columns, account, symbol, position, price)
            except rules.Rejected as exc:
                raise FieldError(exc.field, exc.reason) from None
        if order is None:  # lost a race for this client order id: show the winner
            placed = await placed_order(session, account_id, data["client_order_id"])
            await self._answer_existing(data, placed)
            return
        if price is not None:  # its event is in the outbox already
            message = rules.describe_fill(
                order.id, side, qty, symbol.ticker, price, order.updated_at
            )
            self._wake_relay_after_commit()
        else:
            message = rules.describe_open(order.id, side, qty, symbol.ticker, limit)
            self._publish_after_commit(order, symbol.ticker)
            self.on_commit(lambda: self._recheck(symbol.ticker, side, limit))
        client_order_id = data["client_order_id"]
        self.on_commit(lambda: failpoints.hit("orders.after_commit", client_order_id))
        await self._load_orders()
        self._answer(order, message)

    def _needs_confirmation(self, assessment: rules.Assessment, data: Mapping[str, Any]) -> bool:
        """A buy spending more than ``ORDERS_CONFIRM_SHARE`` of the buying power is placed
        only with the confirmation of exactly this order (the ticket asks; nothing is
        written meanwhile)."""
        share = Decimal(str(self.deps.confirm_share))
        if assessment.side != "buy" or assessment.cost <= share * assessment.buying_power:
            return False
        intent = rules.intent_of(data)
        if data.get("confirm") == intent:
            return False
        pct = assessment.cost / assessment.buying_power * 100 if assessment.buying_power else 100
        self.state.update(
            {
                "status": "confirm",
                "confirm": {"intent": intent, "text": rules.describe_confirmation(assessment)},
                "message": (
                    f"Not placed yet: this buy would spend {pct:.0f}% of your buying power. "
                    "Confirm it, or change it."
                ),
                "order_status": "confirm",
                "values": {
                    "symbol": data["symbol"],
                    "quantity": str(data["quantity"]),
                    "order_type": data["order_type"],
                    "limit_price": "" if data["limit_price"] is None else str(data["limit_price"]),
                },
            }
        )
        return True

    async def on_whatif(
        self,
        symbol: str = "",
        quantity: str = "",
        order_type: str = "market",
        limit_price: str = "",
        **_: Any,
    ) -> None:
        """While the trader types: what a buy and a sell of this quantity would do, by the
        same check that accepts or refuses the order (page-only: nothing is written)."""
        self.state["whatif"] = None
        found = await find_symbol(self.session, symbol) if symbol.strip() else None
        try:
            qty = int(quantity)
            limit = Decimal(limit_price) if order_type == "limit" and limit_price else None
        except (ValueError, ArithmeticError):
            return
        if limit is not None and (not limit.is_finite() or limit <= 0):
            return  # the submit's field error says why; nothing to show meanwhile
        if found is None or not 0 < qty <= 10_000 or (order_type == "limit" and not limit):
            return
        account = await self.session.get(Account, int(self.request.user.account_id or 0))
        if account is None:
            return
        position = await self.session.scalar(
            select(Position).where(
                Position.account_id == account.id, Position.symbol_id == found.id
            )
        )
        try:
            bid, ask = self._quote(found)
        except FieldError as exc:  # the feed is silent: say so instead of guessing
            self.state["whatif"] = {"note": exc.message}
            return
        views = {}
        for side in ("buy", "sell"):  # priced as the submit prices it
            fill = rules.fill_price(side, limit, bid, ask)
            price = fill if fill is not None else cast(Decimal, limit)  # a resting limit
            views[side] = await assess_order(
                self.session, account, found, position, side, qty, price
            )
        self.state["whatif"] = rules.whatif_view(views["buy"], views["sell"])

    async def _answer_existing(self, data: Mapping[str, Any], placed: tuple[Order, str]) -> None:
        """Idempotency: an already used client order id answers with its order."""
        existing, ticker = placed
        if not rules.same_intent(existing, ticker, data):
            # e.g. two tabs rendered the same form: never drop a different order silently
            raise FieldError(
                "__all__",
                f"This form was already used for order #{existing.id}; "
                "review the order and submit again",
            )
        await self._load_orders()
        self._answer(existing, f"Order #{existing.id} already received: {existing.status}")

    async def on_cancel(self, order_id: int) -> None:
        order = await self.session.scalar(
            select(Order)
            .where(Order.id == order_id, Order.account_id == self.request.user.account_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
        if order is None or order.status != "open":
            raise FieldError("order_id", f"Order #{order_id} is not open")
        cancel(order)
        symbol = await self.session.get_one(Symbol, order.symbol_id)
        self._publish_after_commit(order, symbol.ticker)
        await self._load_orders()
        self.state.update(
            {
                "order_status": order.status,
                "order_id": order.id,
                "message": f"Order #{order.id} cancelled",
            }
        )
