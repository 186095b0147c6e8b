"""Live sessions over the in-memory bus: lifecycle, routing, parts, isolation, adoption."""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CollectorRegistry

from shared import wire
from shared.bus import InMemoryBus
from shared.components import Component, ComponentContext, LiveSessions, MountCache, Registry
from shared.components.live import subject_pattern
from shared.components.metrics import ComponentMetrics
from shared.components.permissions import HasTradingPermission, IsAuthenticated
from shared.components.testing import trader
from tests.example_service.components import Portfolio
from tests.example_service.fakes import FakeClock
from tests.unit.live_support import TEMPLATES, live_sessions, session, ui


def test_subject_pattern() -> None:
    assert subject_pattern(wire.ORDERS_EVENTS_TEMPLATE) == "orders.events.*"
    assert subject_pattern(wire.PRICES_TICKS) == "prices.ticks"


async def test_open_publishes_a_full_render_of_each_live_component() -> None:
    bus, live = await live_sessions()
    await bus.publish(wire.SESSION_OPENED, session())
    await live.settled()
    [msg] = ui(bus)
    assert msg["component"] == "portfolio" and msg["full"] is True
    assert [p["id"] for p in msg["parts"]] == ["portfolio-root"]
    assert 'data-component="portfolio"' in msg["parts"][0]["html"]
    assert len(ui(bus, component="watchlist")) == 1
    assert ui(bus, component="order") == []  # no subscriptions: not live
    await live.stop()


async def test_tick_publishes_only_changed_parts_with_the_tick_ts() -> None:
    bus, live = await live_sessions()
    await bus.publish(wire.SESSION_OPENED, session())
    await live.settled()
    await bus.publish(wire.PRICES_TICKS, {"seq": 1, "ts": 1700000000.25, "prices": {"AAPL": 195.0}})
    await live.settled()
    msg = ui(bus)[-1]
    assert msg["full"] is False and msg["ts"] == 1700000000.25
    assert [p["id"] for p in msg["parts"]] == ["portfolio-row-AAPL", "portfolio-total"]
    assert "3,950.00" in msg["parts"][1]["html"]
    updates = len(ui(bus))
    await bus.publish(
        wire.PRICES_TICKS, {"seq": 2, "ts": "2025-01-02T09:30:00Z", "prices": {"AAPL": 195.0}}
    )
    await live.settled()
    await bus.publish(wire.PRICES_TICKS, {"seq": 3, "prices": {"ZZZ": 1.0}})
    await live.settled()
    assert len(ui(bus)) == updates  # nothing changed for the user: no update
    # but each tick-driven component says it is done with each tick (the gateway's cue)
    done = [p["tick"] for s, p in bus.published if s == wire.ui_shared_subject("portfolio")]
    assert done == [1, 2, 3]
    await live.stop()


async def test_one_instance_per_user_shared_by_sessions() -> None:
    bus, live = await live_sessions()
    await bus.publish(wire.SESSION_OPENED, session("a"))
    await live.settled()
    await bus.publish(wire.SESSION_OPENED, session("b"))
    await live.settled()
    assert len([k for k in live.instances if k[1] == "portfolio"]) == 1
    assert [m["full"] for m in ui(bus)] == [True, True]  # the new tab gets a full render
    await bus.publish(wire.SESSION_CLOSED, {"session_id": "a"})
    await live.settled()
    await bus.publish(wire.PRICES_TICKS, {"prices": {"AAPL": 191.0}})
    await live.settled()
    assert ui(bus)[-1]["full"] is False
    await bus.publish(wire.SESSION_CLOSED, {"session_id": "b"})
    await live.settled()
    assert live.instances == {}
    before = len(ui(bus))
    await bus.publish(wire.PRICES_TICKS, {"prices": {"AAPL": 192.0}})
    await live.settled()
    assert len(ui(bus)) == before
    await live.stop()


async def test_account_subjects_reach_only_that_account() -> None:
    bus, live = await live_sessions()
    await bus.publish(wire.SESSION_OPENED, session("a", user_id=1, account_id=11))
    await live.settled()
    await bus.publish(wire.SESSION_OPENED, session("b", user_id=2, account_id=22))
    await live.settled()
    event = {"order_id": 1, "status": "filled", "symbol": "NVDA", "side": "buy", "qty": 3}
    await bus.publish(wire.orders_events(22), {**event, "ts": "t1"})
    await live.settled()
    assert len(ui(bus, 1)) == 1  # only its open render
    [_, added] = ui(bus, 2)
    assert added["full"] is True and "portfolio-row-NVDA" in added["parts"][0]["html"]
    assert added["ts"] == "t1"
    await live.stop()


async def test_missed_heartbeats_forget_the_session() -> None:
    clock = FakeClock()
    bus, live = await live_sessions(clock)
    await bus.publish(wire.SESSION_OPENED, session())
    await live.settled()
    clock.advance(25)
    await bus.publish(wire.SESSION_HEARTBEAT, session())
    await live.settled()
    clock.advance(29)
    assert live.sweep() == []
    clock.advance(2)  # 31 s since the last heartbeat: three missed
    assert live.sweep() == ["s1"]
    assert live.instances == {}
    before = len(bus.published)
    await bus.publish(wire.PRICES_TICKS, {"prices": {"AAPL": 200.0}})
    await live.settled()
    assert len(bus.published) == before + 1
    await live.stop()


async def test_a_session_closed_before_its_queued_mount_began_is_never_mounted() -> None:
    bus, live = await live_sessions()
    live.metrics = metrics = ComponentMetrics(CollectorRegistry())
    await bus.publish(wire.SESSION_OPENED, session("s1", user_id=1))
    await bus.publish(wire.SESSION_OPENED, session("s2", user_id=2, account_id=2))
    await bus.publish(wire.SESSION_CLOSED, {"session_id": "s1"})  # before the queue's turn
    await live.settled()
    assert ui(bus, user_id=1) == [] and all(key[0] != 1 for key in live.instances)
    assert [m["full"] for m in ui(bus, user_id=2)] == [True]  # the one still open: mounted
    assert metrics.mounts_skipped._value.get() == 1
    await live.stop()


async def test_heartbeat_for_an_unknown_session_opens_it() -> None:
    bus, live = await live_sessions()
    await bus.publish(wire.SESSION_HEARTBEAT, session())
    await live.settled()
    assert ui(bus)[0]["full"] is True
    await live.stop()


async def test_a_heartbeat_mounts_no_socket_waiting_for_its_turn_for_this_services_renders() -> (
    None
):
    """The gateway's window holds the socket's turn (a takeover, a reconnect): its
    announcement will come; mounted from the heartbeat, a thousand would render at once."""
    bus, live = await live_sessions()
    names = sorted(cls.name for cls in live.live_components)
    await bus.publish(wire.SESSION_HEARTBEAT, {**session(), "waiting": names})
    await live.settled()
    assert ui(bus) == [] and len(live.sessions) == 0
    # waiting for another service's renders only: this one mounts it, as before
    await bus.publish(wire.SESSION_HEARTBEAT, {**session(), "waiting": ["elsewhere"]})
    await live.settled()
    assert ui(bus)[0]["full"] is True
    await live.stop()


async def test_failing_instance_does_not_stop_the_others(caplog: Any) -> None:
    bus, live = await live_sessions()
    await bus.publish(wire.SESSION_OPENED, session("a", 1, 1))
    await live.settled()
    await bus.publish(wire.SESSION_OPENED, session("b", 2, 2))
    await live.settled()
    live.instances[(1, "portfolio")].component.state["positions"] = None
    await bus.publish(wire.PRICES_TICKS, {"prices": {"AAPL": 199.0}})
    await live.settled()
    assert ui(bus, 2)[-1]["full"] is False
    assert "on_ws_message(price_tick) failed" in caplog.text
    await live.stop()


async def test_adopt_takes_over_event_state_and_publishes_the_difference() -> None:
    bus, live = await live_sessions()
    await bus.publish(wire.SESSION_OPENED, session())
    await live.settled()
    posted = live.instances[(1, "watchlist")].component
    new_state = {"items": [*posted.state["items"], {"ticker": "MSFT", "last": 410.0}]}
    event_component = type(posted)(ComponentContext(user=posted.request.user), state=new_state)
    await live.adopt(event_component)
    assert live.instances[(1, "watchlist")].component.state == new_state
    msg = ui(bus, component="watchlist")[-1]
    assert msg["full"] is True and "watchlist-row-MSFT" in msg["parts"][0]["html"]
    await bus.publish(wire.PRICES_TICKS, {"prices": {"MSFT": 420.0}})
    await live.settled()
    assert "420.00" in ui(bus, component="watchlist")[-1]["parts"][0]["html"]
    await live.stop()


async def test_failed_live_mount_is_retried_on_the_next_heartbeat() -> None:
    flaky_registry, failures = Registry(), [1]

    @flaky_registry.register("risk_metrics")
    class Flaky(Component):
        template_name = "components/watchlist.html"
        template_dir = str(TEMPLATES)
        subscriptions = {wire.RISK_BREACH_TEMPLATE: wire.EVENT_RISK_BREACH}

        def mount(self) -> None:
            if failures:
                failures.pop()
                raise ConnectionError("database away")
            self.state["items"] = []

    bus = InMemoryBus()
    live = LiveSessions(flaky_registry, bus)
    await live.start()
    await bus.publish(wire.SESSION_OPENED, session())
    await live.settled()
    assert live.instances == {} and ui(bus, component="risk_metrics") == []
    await bus.publish(wire.SESSION_HEARTBEAT, session())
    await live.settled()
    assert (1, "risk_metrics") in live.instances
    assert ui(bus, component="risk_metrics")[0]["full"] is True
    await live.stop()


async def test_a_handler_returning_false_skips_the_diff_and_publishes_nothing() -> None:
    quiet_registry = Registry()

    @quiet_registry.register("watchlist")
    class Quiet(Component):
        template_name = "components/watchlist.html"
        template_dir = str(TEMPLATES)
        subscriptions = {wire.PRICES_TICKS: wire.EVENT_PRICE_TICK}

        def mount(self) -> None:
            self.state["items"] = [{"ticker": "AAPL", "last": 1.0}]

        async def on_ws_message(self, message: dict[str, Any]) -> bool | None:
            self.state["items"][0]["last"] = message["prices"]["AAPL"]
            # False: "nothing changed" (here: taken at its word below 3)
            return None if message["prices"]["AAPL"] >= 3 else False

    bus = InMemoryBus()
    live = LiveSessions(quiet_registry, bus, context=lambda i: ComponentContext(user=i))
    await live.start()
    await bus.publish(wire.SESSION_OPENED, session())
    await live.settled()
    assert len(ui(bus, component="watchlist")) == 1
    await bus.publish(wire.PRICES_TICKS, {"prices": {"AAPL": 2.0}})
    await live.settled()
    assert len(ui(bus, component="watchlist")) == 1  # taken at its word: no diff, no publish
    await bus.publish(wire.PRICES_TICKS, {"prices": {"AAPL": 3.0}})
    await live.settled()
    assert len(ui(bus, component="watchlist")) == 2
    await live.stop()


async def test_an_event_during_a_slow_mount_is_not_overwritten_by_the_mounts_older_rows() -> None:
    slow_registry, gate, stored = Registry(), asyncio.Event(), {"items": ["AAPL"]}
    read: list[list[str]] = []
    mounting = asyncio.Event()

    @slow_registry.register("watchlist")
    class Slow(Component):
        template_name = "components/watchlist.html"
        template_dir = str(TEMPLATES)
        subscriptions = {wire.PRICES_TICKS: wire.EVENT_PRICE_TICK}

        async def mount(self) -> None:
            rows = [{"ticker": t, "last": 1.0} for t in stored["items"]]  # read, then stall
            read.append([r["ticker"] for r in rows])
            mounting.set()
            await gate.wait()
            self.state["items"] = rows

    bus = InMemoryBus()
    live = LiveSessions(slow_registry, bus, context=lambda i: ComponentContext(user=i))
    await live.start()
    await bus.publish(wire.SESSION_OPENED, session())
    await mounting.wait()  # the mount worker has read the rows and waits
    # the trader adds a symbol through HTTP meanwhile: the event's state is the newer one
    stored["items"].append("MSFT")
    posted = Slow(ComponentContext(user=trader(1, 1)))
    posted.state = {"items": [{"ticker": t, "last": 1.0} for t in stored["items"]]}
    await live.adopt(posted, "add_symbol")
    gate.set()
    await live.settled()
    assert read == [["AAPL"]]  # the mount did read the older rows
    state = live.instances[(1, "watchlist")].component.state
    assert [i["ticker"] for i in state["items"]] == ["AAPL", "MSFT"]
    last = ui(bus, component="watchlist")[-1]
    assert last["full"] and "watchlist-row-MSFT" in last["parts"][0]["html"]
    await live.stop()


async def test_a_live_component_the_user_may_not_see_tells_the_page_it_shows_nothing() -> None:
    """A socket's user without a component's permission gets no instance of it, and an
    empty full render addressed to that socket: the gateway stops waiting for one."""
    traders_only = Registry()

    @traders_only.register("portfolio")
    class TradersPortfolio(Portfolio):
        template_dir = str(TEMPLATES)
        permission_classes = [IsAuthenticated, HasTradingPermission]

    bus = InMemoryBus()
    live = LiveSessions(traders_only, bus, context=lambda identity: ComponentContext(user=identity))
    await live.start()
    await bus.publish(wire.SESSION_OPENED, {**session("viewer-tab", 2, 2), "permissions": []})
    await bus.publish(wire.SESSION_OPENED, session("trader-tab", 1, 1))
    await live.settled()
    [nothing] = ui(bus, 2)
    assert nothing == {**nothing, "full": True, "parts": [], "session": "viewer-tab"}
    assert (2, "portfolio") not in live.instances
    [full] = ui(bus, 1)
    assert full["full"] and full["parts"] and full["session"] == "trader-tab"
    await live.stop()


async def test_a_takeover_forgets_the_mounts_cached_while_another_replica_owned_them() -> None:
    """A page load served here cached alice's positions; the owner then booked an order
    (its own cache is invalidated, not this one's). Taking her partition over, this replica
    must mount her from the database, not from that entry."""
    cache = MountCache()
    cache.set("portfolio", 1, {"positions": ["before the order"]}, ttl=60)
    bus = InMemoryBus()
    live = LiveSessions(Registry(), bus, cache=cache)
    await live.partitions_gained({wire.partition_of(1)})
    assert cache.get("portfolio", 1) is None
    assert [s for s, _ in bus.published] == [wire.GATEWAY_RESYNC]
