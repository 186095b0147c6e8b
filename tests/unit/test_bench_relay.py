"""The live benchmark's bare relay routes the services' messages as the gateway would:
per-user updates to their user, shared parts to the users whose page shows the topic."""

from __future__ import annotations

from bench.live_relay import Routes
from shared import wire


def part(part_id: str) -> dict[str, str]:
    return {"id": part_id, "html": f'<div id="{part_id}">x</div>'}


def per_user(component: str, *updates: dict[str, object]) -> tuple[str, dict[str, object]]:
    user = int(updates[0]["user"])  # type: ignore[call-overload]
    subject = wire.ui_partition_subject(wire.partition_of(user), component)
    return subject, {"component": component, "ts": 1.0, "epoch": 1, "updates": list(updates)}


def shared(component: str, topics: dict[str, list[str]]) -> tuple[str, dict[str, object]]:
    wire_topics = {topic: [part(i) for i in ids] for topic, ids in topics.items()}
    return wire.ui_shared_subject(component), {"component": component, "topics": wire_topics}


def test_a_full_render_names_the_topics_whose_shared_parts_its_user_then_gets() -> None:
    routes = Routes()
    routes.join(7)
    quotes = {"AAPL": ["watchlist-q-AAPL"], "MSFT": ["watchlist-q-MSFT"]}
    assert routes.frames(*shared("watchlist", quotes)) == {}  # no page shows them yet

    full = wire.ui_update(7, [part("watchlist-root")], full=True, session="s1", topics=["AAPL"])
    other = wire.ui_update(8, [part("watchlist-root")], full=True, topics=["MSFT"])
    frames = routes.frames(*per_user("watchlist", full))
    assert frames == {7: '<div id="watchlist-root">x</div>'}  # whichever tab it names
    assert routes.frames(*per_user("watchlist", other)) == {}  # 8 has no socket here

    frames = routes.frames(*shared("watchlist", quotes))
    assert frames == {7: '<div id="watchlist-q-AAPL">x</div>'}
    assert routes.frames(*shared("portfolio", {"AAPL": ["portfolio-last-AAPL"]})) == {}

    two = wire.ui_update(7, [part("portfolio-pl-AAPL"), part("portfolio-totals")], full=False)
    assert routes.frames(*per_user("portfolio", two)) == {
        7: '<div id="portfolio-pl-AAPL">x</div>\n<div id="portfolio-totals">x</div>'
    }

    routes.leave(7)
    assert routes.frames(*shared("watchlist", quotes)) == {}


def test_only_messages_that_may_be_for_its_users_are_decoded() -> None:
    routes = Routes()
    assert not routes.wanted(wire.ui_shared_subject("watchlist"))  # nobody here
    routes.join(7)
    mine = wire.partition_of(7)
    other = next(p for p in range(wire.LIVE_PARTITIONS) if p != mine)
    assert routes.wanted(wire.ui_shared_subject("watchlist"))
    assert routes.wanted(wire.ui_partition_subject(mine, "portfolio"))
    assert not routes.wanted(wire.ui_partition_subject(other, "portfolio"))
    assert not routes.wanted("ui.portfolio")
    routes.leave(7)
    assert not routes.wanted(wire.ui_partition_subject(mine, "portfolio"))
