"""Event dispatch: validation, permissions, domain errors, failures, and the seed's shapes."""

from __future__ import annotations

import asyncio

import pytest

from shared.components import (
    Component,
    HandlerError,
    IsAuthenticated,
    PermissionDenied,
    Registry,
    UnknownEvent,
)
from shared.components.testing import (
    ComponentTestCase,
    aassert_permission_denied,
    adispatch_event,
    assert_permission_denied,
    assert_state,
    dispatch_event,
    trader,
)
from shared.identity import AnonymousUser
from tests.example_service.components import COMMITTED, Order, Portfolio, Watchlist

VALID = {"symbol": "AAPL", "side": "buy", "quantity": 10, "order_type": "market"}


class TestSeedShapes(ComponentTestCase):
    """The seed's five tests, with only imports changed (no ORM here)."""

    def test_valid_market_order_is_submitted(self) -> None:
        component = dispatch_event(Order, "submit", VALID)
        assert component.state["status"] == "submitted"

    def test_quantity_zero_is_rejected(self) -> None:
        component = dispatch_event(Order, "submit", {**VALID, "quantity": 0})
        assert "quantity" in component.state["errors"]

    def test_unauthenticated_cannot_place_order(self) -> None:
        assert_permission_denied(Order, "submit", user=AnonymousUser())

    def test_optimistic_patch_shows_pending(self) -> None:
        component = Order()
        patch = component.get_optimistic_patch("submit", {})
        assert patch["status"] == "pending"

    def test_price_tick_updates_portfolio_pnl(self) -> None:
        component = Portfolio()
        component.state = {
            "positions": [
                {"symbol": "AAPL", "qty": 10, "avg_cost": 180.0, "last": 180.0, "pnl": 0}
            ],
            "total_value": 1800,
        }
        asyncio.run(component.on_ws_message({"event": "price_tick", "prices": {"AAPL": 195.0}}))
        assert component.state["positions"][0]["pnl"] == 150.0
        assert component.state["total_value"] == 1950.0


class TestValidation(ComponentTestCase):
    def test_errors_map_field_to_message_and_handler_is_not_called(self) -> None:
        component = dispatch_event(Order, "submit", {"symbol": "AAPL", "side": "hold"})
        assert component.status_code == 422  # type: ignore[attr-defined]
        assert set(component.state["errors"]) == {"side", "quantity"}
        assert "buy" in component.state["errors"]["side"]
        assert_state(component, status="new", count=0)

    def test_model_level_error_is_reported_under_all(self) -> None:
        component = dispatch_event(Order, "submit", {**VALID, "order_type": "limit"})
        assert "limit_price" in component.state["errors"]["__all__"]

    def test_form_strings_are_coerced(self) -> None:
        component = dispatch_event(Order, "submit", {**VALID, "quantity": "7", "csrf": "x"})
        assert component.state["message"] == "Order for 7 AAPL submitted"

    def test_field_error_from_handler_restores_state(self) -> None:
        component = dispatch_event(Order, "submit", {**VALID, "symbol": "ZZZZ"})
        assert component.status_code == 422  # type: ignore[attr-defined]
        assert component.state["errors"] == {"symbol": "Unknown symbol: ZZZZ"}
        assert_state(component, status="new")
        assert component.state["values"]["symbol"] == "ZZZZ"

    def test_errors_clear_on_next_success(self) -> None:
        component = dispatch_event(Watchlist, "add_symbol", {"ticker": "msft"})
        assert "errors" not in component.state
        assert [i["ticker"] for i in component.state["items"]] == ["AAPL", "MSFT"]

    def test_plain_component_kwargs_come_from_the_signature(self) -> None:
        component = dispatch_event(Watchlist, "add_symbol", {"ticker": "nvda", "rank": "3"})
        assert component.state["items"][-1] == {"ticker": "NVDA", "last": 120.0, "rank": 3}

    def test_plain_component_missing_argument_is_422(self) -> None:
        component = dispatch_event(Watchlist, "add_symbol", {"csrf": "t"})
        assert component.status_code == 422  # type: ignore[attr-defined]
        assert "ticker" in component.state["errors"]

    def test_plain_component_field_error(self) -> None:
        component = dispatch_event(Watchlist, "add_symbol", {"ticker": "zzzz"})
        assert component.state["errors"] == {"ticker": "Unknown symbol: ZZZZ"}
        assert len(component.state["items"]) == 1


class TestPermissions(ComponentTestCase):
    def test_anonymous_is_401(self) -> None:
        exc = assert_permission_denied(Order, "submit", status=401)
        assert exc.permission == "IsAuthenticated"

    def test_authenticated_without_trading_permission_is_403(self) -> None:
        exc = assert_permission_denied(
            Order, "submit", user=trader(can_trade=False), payload=VALID, status=403
        )
        assert exc.permission == "HasTradingPermission"

    def test_is_authenticated_alone_admits_non_traders(self) -> None:
        component = dispatch_event(
            Watchlist, "add_symbol", {"ticker": "MSFT"}, trader(2, 2, can_trade=False)
        )
        assert len(component.state["items"]) == 2

    def test_assert_permission_denied_fails_when_allowed(self) -> None:
        with pytest.raises(AssertionError, match="was not denied"):
            assert_permission_denied(
                Watchlist, "add_symbol", user=trader(), payload={"ticker": "A"}
            )

    def test_permissions_checked_before_validation(self) -> None:
        with pytest.raises(PermissionDenied) as info:
            dispatch_event(Order, "submit", {}, AnonymousUser())
        assert info.value.status == 401


class TestFailures(ComponentTestCase):
    def test_unknown_event_and_reserved_names(self) -> None:
        for event in ("nope", "ws_message", "commit", "1bad", "mount-x"):
            with pytest.raises(UnknownEvent):
                dispatch_event(Portfolio, event, {})

    def test_exception_restores_state_and_skips_commit_callbacks(self) -> None:
        COMMITTED.clear()
        with pytest.raises(HandlerError) as info:
            dispatch_event(Order, "submit", {**VALID, "quantity": 13})
        assert isinstance(info.value.__cause__, RuntimeError)
        assert info.value.component.state == {"status": "new", "count": 0}
        assert COMMITTED == []
        dispatch_event(Order, "submit", VALID)
        assert COMMITTED == ["AAPL"]

    def test_session_without_database_is_an_error(self) -> None:
        registry = Registry()

        @registry.register("portfolio")
        class NeedsDb(Component):
            permission_classes = [IsAuthenticated]

            async def on_go(self) -> None:
                self.session  # noqa: B018

        with pytest.raises(HandlerError) as info:
            dispatch_event(NeedsDb, "go", {})
        assert "no database" in str(info.value.__cause__)


class TestAsyncHelpers(ComponentTestCase):
    async def test_async_helpers_inside_a_running_loop(self) -> None:
        component = await adispatch_event(Order, "submit", VALID)
        assert component.state["status"] == "submitted"
        await aassert_permission_denied(Order, "submit", trader(can_trade=False), status=403)

    async def test_sync_helper_refuses_a_running_loop(self) -> None:
        with pytest.raises(RuntimeError, match="await"):
            dispatch_event(Order, "submit", VALID)


def test_helpers_work_outside_a_test_case() -> None:
    assert dispatch_event(Order, "submit", VALID).state["count"] == 1


def test_bare_component_has_a_default_context() -> None:
    component = Portfolio()
    assert component.request.user.is_authenticated is False
    assert component.component_id == "root"
    assert component.root_id == "portfolio-root"
    assert component.state == {}
    assert Order().optimistic("submit") == '{"status":"pending","message":"Sending order…"}'
