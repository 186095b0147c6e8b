"""The gateway's in-process fan-out: per-user batches, one tab's full render, shared topics."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gateway.buffer import PartBuffer
from gateway.fanout import Fanout
from shared import wire


@dataclass(eq=False)
class Socket:
    user_id: int
    session_id: str
    buffer: PartBuffer = field(default_factory=PartBuffer)

    def ids(self) -> list[str]:
        frames = self.buffer.drain().frames
        return (
            []
            if not frames
            else [line.split('id="', 1)[1].split('"', 1)[0] for line in frames[0].split("\n")]
        )


def fanout(*sockets: Socket) -> Fanout:
    """A fan-out with these sockets added."""
    fan = Fanout()
    for socket in sockets:
        fan.add(socket)
    return fan


def part(part_id: str, text: str = "x") -> dict[str, str]:
    return {"id": part_id, "html": f'<div id="{part_id}">{text}</div>'}


def updates(component: str, *entries: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """A per-user message on the partition of its (first) user's."""
    partition = wire.partition_of(entries[0]["user"]) if entries else 3
    return wire.ui_partition_subject(partition, component), {
        "component": component,
        "ts": 1,
        "updates": list(entries),
    }


def shared(component: str, topics: dict[str, list[dict[str, str]]]) -> tuple[str, dict]:
    return wire.ui_shared_subject(component), {"component": component, "ts": 1, "topics": topics}


def marker(
    component: str, tick: int, topics: dict | None = None, src: str | None = None
) -> tuple[str, dict]:
    """``component``'s mark that it (its replica ``src``) is done with ``tick``."""
    subject, message = shared(component, topics or {})
    return subject, {**message, "tick": tick} | ({} if src is None else {"src": src})


async def test_updates_reach_every_tab_of_their_user_only() -> None:
    a1, a2, b = Socket(1, "a1"), Socket(1, "a2"), Socket(2, "b")
    fan = fanout(a1, a2, b)
    await fan.on_ui(*updates("portfolio", wire.ui_update(1, [part("portfolio-pl-X")], full=False)))
    assert a1.ids() == a2.ids() == ["portfolio-pl-X"]
    assert b.ids() == []


async def test_a_full_render_for_one_session_goes_to_that_tab_only() -> None:
    a1, a2 = Socket(1, "a1"), Socket(1, "a2")
    fan = fanout(a1, a2)
    update = wire.ui_update(1, [part("portfolio-root")], full=True, session="a2")
    await fan.on_ui(*updates("portfolio", update))
    assert a1.ids() == [] and a2.ids() == ["portfolio-root"]
    # a session id of another user is not a way into someone else's tab
    await fan.on_ui(*updates("portfolio", wire.ui_update(2, [part("portfolio-x")], full=True,
                                                          session="a1")))  # fmt: skip
    assert a1.ids() == []


async def test_shared_parts_go_to_the_pages_that_show_their_topic() -> None:
    alice, bob = Socket(1, "a"), Socket(2, "b")
    fan = fanout(alice, bob)
    full = {"full": True, "parts": [part("watchlist-root")]}
    await fan.on_ui(*updates("watchlist", {"user": 1, **full, "topics": ["AAPL", "KO"]}))
    await fan.on_ui(*updates("watchlist", {"user": 2, **full, "topics": ["KO"]}))
    alice.ids(), bob.ids()
    quote = {"AAPL": [part("watchlist-quote-AAPL")], "KO": [part("watchlist-quote-KO")]}
    await fan.on_ui(*shared("watchlist", quote))
    assert alice.ids() == ["watchlist-quote-AAPL", "watchlist-quote-KO"]
    assert bob.ids() == ["watchlist-quote-KO"]
    # the portfolio's topics are its own: a watchlist topic does not subscribe them
    await fan.on_ui(*shared("portfolio", {"KO": [part("portfolio-last-KO")]}))
    assert bob.ids() == []
    # a new full render replaces the topics: bob removed KO, added AAPL
    await fan.on_ui(*updates("watchlist", {"user": 2, **full, "topics": ["AAPL"]}))
    bob.ids()
    await fan.on_ui(*shared("watchlist", quote))
    assert bob.ids() == ["watchlist-quote-AAPL"]


async def test_a_users_topics_go_with_their_last_socket() -> None:
    a1, a2 = Socket(1, "a1"), Socket(1, "a2")
    fan = fanout(a1, a2)
    await fan.on_ui(
        *updates("watchlist", {"user": 1, "full": True, "parts": [], "topics": ["AAPL"]})
    )
    fan.remove(a1)
    assert fan.topics(1, "watchlist") == {"AAPL"}
    fan.remove(a2)
    assert fan.topics(1, "watchlist") == frozenset()
    assert len(fan) == 0


async def test_parts_of_another_component_or_malformed_messages_are_dropped() -> None:
    alice = Socket(1, "a")
    fan = fanout(alice)
    foreign = wire.ui_update(1, [part("risk-gauge"), part("portfolio-pl-X")], full=False)
    await fan.on_ui(*updates("portfolio", foreign))
    assert alice.ids() == ["portfolio-pl-X"]
    subject, message = updates("portfolio", {"user": "1", "parts": [part("portfolio-a")]})
    await fan.on_ui(subject, message)  # user id not an int
    await fan.on_ui("ui.3.watchlist", message)  # subject and component disagree
    await fan.on_ui("ui.shared.portfolio", {"component": "portfolio", "topics": "nonsense"})
    assert alice.ids() == []
    # a made-up component is ignored whole: no parts, and it is never waited for
    await fan.on_ui("ui.shared.made_up", {"component": "made_up", "topics": {}, "tick": 1})
    assert fan.ticks.done_with == {}


async def test_a_ticks_parts_wait_until_every_component_is_done_with_the_pages_partition() -> None:
    alice = Socket(1, "a")
    fan = fanout(alice)
    full = {"full": True, "parts": [part("watchlist-root")], "topics": ["KO"]}
    await fan.on_ui(*updates("watchlist", {"user": 1, **full}))
    alice.ids()

    await fan.on_ui(*marker("portfolio", 4))  # the portfolio follows ticks too
    await fan.on_ui(*marker("watchlist", 5, {"KO": [part("watchlist-quote-KO")]}))
    assert alice.buffer.ready.is_set() and not alice.buffer.urgent
    assert not alice.buffer.go.is_set()  # the portfolio is not done with tick 5
    # its tick-5 message for alice's partition is the last it sends there for tick 5
    subject, batch = updates("portfolio", wire.ui_update(1, [part("portfolio-pl-KO")], full=False))
    await fan.on_ui(subject, {**batch, "tick": 5})
    assert alice.buffer.go.is_set()
    assert alice.ids() == ["watchlist-quote-KO", "portfolio-pl-KO"]
    # an event's result is not tick-driven: it goes out at once
    await fan.on_ui(*updates("portfolio", wire.ui_update(1, [part("portfolio-x")], full=False)))
    assert alice.buffer.urgent


async def test_a_ticks_shared_parts_sent_before_its_partitions_do_not_end_it() -> None:
    alice = Socket(1, "a")
    fan = fanout(alice)
    full = {"full": True, "parts": [part("portfolio-root")], "topics": ["KO"]}
    await fan.on_ui(*updates("portfolio", {"user": 1, **full}))
    await fan.on_ui(*marker("portfolio", 4))
    alice.ids()

    subject, message = marker("portfolio", 5, {"KO": [part("portfolio-last-KO")]})
    await fan.on_ui(subject, {**message, "done": False})  # the partitions follow
    assert alice.buffer.ready.is_set() and not alice.buffer.go.is_set()
    subject, batch = updates("portfolio", wire.ui_update(1, [part("portfolio-pl-KO")], full=False))
    await fan.on_ui(subject, {**batch, "tick": 5})
    assert alice.ids() == ["portfolio-last-KO", "portfolio-pl-KO"]  # one frame, both


async def test_a_page_waits_for_its_partitions_owner_not_for_other_replicas() -> None:
    alice, bob = Socket(1, "a"), Socket(2, "b")
    assert wire.partition_of(1) != wire.partition_of(2)
    fan = fanout(alice, bob)
    await fan.on_ui(*marker("portfolio", 1, src="r1"))
    await fan.on_ui(*marker("portfolio", 1, src="r2"))
    for user, src in ((1, "r1"), (2, "r2")):  # r1 owns alice's partition, r2 bob's
        subject, batch = fenced("portfolio", user, epoch=1, seq=1, src=src)
        await fan.on_ui(subject, {**batch, "tick": 1})
    alice.ids(), bob.ids()

    subject, batch = fenced("portfolio", 1, epoch=1, seq=2, src="r1")
    await fan.on_ui(subject, {**batch, "tick": 2})
    assert alice.buffer.go.is_set()  # r2, still busy with tick 2, sends alice nothing
    subject, batch = fenced("portfolio", 2, epoch=1, seq=2, src="r2")
    await fan.on_ui(*marker("portfolio", 2, src="r1"))
    assert not bob.buffer.go.is_set()
    await fan.on_ui(subject, {**batch, "tick": 2})
    assert bob.buffer.go.is_set()


async def test_a_slice_of_a_rate_limited_component_holds_back_only_its_partitions() -> None:
    alice, bob = Socket(1, "a"), Socket(2, "b")
    fan = fanout(alice, bob)
    for component in ("portfolio", "risk_metrics"):
        await fan.on_ui(*marker(component, 1))
        for user in (1, 2):  # the owners of both partitions
            subject, batch = updates(component, wire.ui_update(user, [], full=False))
            await fan.on_ui(subject, {**batch, "tick": 1})
    # risk's tick-2 pass covers bob's partition only
    subject, message = marker("risk_metrics", 2)
    await fan.on_ui(subject, {**message, "done": False, "partitions": [wire.partition_of(2)]})
    for user in (1, 2):
        pl = wire.ui_update(user, [part("portfolio-pl-KO")], full=False)
        subject, batch = updates("portfolio", pl)
        await fan.on_ui(subject, {**batch, "tick": 2})
    assert alice.buffer.go.is_set()  # risk sends her partition nothing this tick
    assert not bob.buffer.go.is_set()  # his partition's risk numbers follow
    subject, batch = updates("risk_metrics", wire.ui_update(2, [part("risk-gauge")], full=False))
    await fan.on_ui(subject, {**batch, "tick": 2})
    assert bob.ids() == ["portfolio-pl-KO", "risk-gauge"]


async def test_standalone_shared_parts_wait_for_their_producers_done_marker() -> None:
    alice = Socket(1, "a")
    fan = fanout(alice)
    full = {"full": True, "parts": [part("watchlist-root")], "topics": ["KO"]}
    await fan.on_ui(*updates("watchlist", {"user": 1, **full}))
    await fan.on_ui(*marker("watchlist", 4))
    await fan.on_ui(*marker("portfolio", 4))
    alice.ids()

    ko = str(wire.topic_partition("KO"))
    subject, message = marker("watchlist", 5, {"KO": [part("watchlist-quote-KO")]})
    await fan.on_ui(subject, {**message, "epochs": {ko: 0}, "done": False})
    subject, batch = updates("portfolio", wire.ui_update(1, [part("portfolio-pl-KO")], full=False))
    await fan.on_ui(subject, {**batch, "tick": 5})
    # a watchlist replica may still send alice's page quotes of tick 5: not done with it
    assert not alice.buffer.go.is_set()
    await fan.on_ui(*marker("watchlist", 5))
    assert alice.ids() == ["watchlist-quote-KO", "portfolio-pl-KO"]


def fenced(
    component: str, user: int, epoch: int, seq: int, src: str = "r1", text: str = "x"
) -> tuple[str, dict]:
    subject, message = updates(component, wire.ui_update(user, [part("portfolio-pl-X", text)],
                                                         full=False))  # fmt: skip
    return subject, {**message, "epoch": epoch, "seq": seq, "src": src}


async def test_a_deposed_owners_late_message_is_dropped() -> None:
    alice = Socket(1, "a")
    fan = fanout(alice)
    await fan.on_ui(*fenced("portfolio", 1, epoch=7, seq=1, src="old"))
    assert alice.ids() == ["portfolio-pl-X"]
    await fan.on_ui(*fenced("portfolio", 1, epoch=9, seq=1, src="new", text="new"))
    assert alice.ids() == ["portfolio-pl-X"]
    await fan.on_ui(*fenced("portfolio", 1, epoch=7, seq=2, src="old", text="stale"))
    assert alice.ids() == []  # older epoch: nothing reaches the page
    # shared parts reach alice only from her partition's owner, not from the deposed one
    full = {"full": True, "parts": [part("portfolio-root")], "topics": ["KO"]}
    subject, message = updates("portfolio", {"user": 1, **full})
    await fan.on_ui(subject, {**message, "epoch": 9, "seq": 2, "src": "new"})
    alice.ids()
    subject, message = shared("portfolio", {"KO": [part("portfolio-last-KO")]})
    await fan.on_ui(subject, {**message, "src": "old"})
    assert alice.ids() == []
    await fan.on_ui(subject, {**message, "src": "new"})
    assert alice.ids() == ["portfolio-last-KO"]


async def test_a_gap_in_a_producers_sequence_asks_for_a_resync_once() -> None:
    alice = Socket(1, "a")
    fan = fanout(alice)
    asked: list[tuple[str, int]] = []
    fan.on_resync = lambda component, partition: asked.append((component, partition))
    await fan.on_ui(*fenced("portfolio", 1, epoch=1, seq=1))
    await fan.on_ui(*fenced("portfolio", 1, epoch=1, seq=2))
    assert asked == []
    await fan.on_ui(*fenced("portfolio", 1, epoch=1, seq=5))  # 3 and 4 were lost
    await fan.on_ui(*fenced("portfolio", 1, epoch=1, seq=9))  # within a second: not again
    assert asked == [("portfolio", wire.partition_of(1))]
    alice.ids()
    await fan.on_ui(*fenced("portfolio", 1, epoch=1, seq=9))  # a duplicate is dropped
    assert alice.ids() == []


async def test_a_frame_waits_for_every_component_to_reach_its_newest_tick() -> None:
    alice = Socket(1, "a")
    fan = fanout(alice)

    await fan.on_ui(*marker("portfolio", 3, src="p1"))
    await fan.on_ui(*marker("risk_metrics", 3, src="q1"))
    subject, batch = fenced("portfolio", 1, epoch=1, seq=1, src="p1")
    await fan.on_ui(subject, {**batch, "tick": 5})  # the portfolio is a tick ahead of risk
    risk = wire.ui_update(1, [part("risk-gauge")], full=False)
    subject, batch = updates("risk_metrics", risk)
    await fan.on_ui(subject, {**batch, "tick": 4, "src": "q1"})
    # risk done with 4 on alice's partition: the portfolio's tick-5 numbers must wait
    assert not alice.buffer.go.is_set()
    await fan.on_ui(*marker("risk_metrics", 5, src="q1"))
    assert alice.buffer.go.is_set()


async def test_a_producer_with_no_message_for_a_partition_must_be_done_with_the_tick() -> None:
    alice = Socket(1, "a")
    fan = fanout(alice)
    await fan.on_ui(*marker("portfolio", 1))
    await fan.on_ui(*marker("risk_metrics", 1))
    subject, batch = updates("portfolio", wire.ui_update(1, [part("portfolio-pl-KO")], full=False))
    await fan.on_ui(subject, {**batch, "tick": 2})
    assert not alice.buffer.go.is_set()  # risk owns no one here yet: its marker counts
    await fan.on_ui(*marker("risk_metrics", 2))
    assert alice.buffer.go.is_set()


async def test_standalone_shared_parts_come_from_the_topics_owner_for_every_page() -> None:
    alice, bob = Socket(1, "a"), Socket(2, "b")
    fan = fanout(alice, bob)
    full = {"full": True, "parts": [part("watchlist-root")], "topics": ["KO"]}
    for user, src in ((1, "r1"), (2, "r2")):  # two replicas own alice and bob
        subject, message = updates("watchlist", {"user": user, **full})
        await fan.on_ui(subject, {**message, "src": src, "epoch": 1})
    alice.ids(), bob.ids()
    ko = str(wire.topic_partition("KO"))
    subject, message = shared("watchlist", {"KO": [part("watchlist-quote-KO")]})
    await fan.on_ui(subject, {**message, "src": "r3", "epochs": {ko: 5}})  # KO's owner
    assert alice.ids() == bob.ids() == ["watchlist-quote-KO"]
    await fan.on_ui(subject, {**message, "src": "r1", "epochs": {ko: 4}})  # deposed: late
    assert alice.ids() == bob.ids() == []


async def test_an_active_part_is_dropped_alone_from_a_message_for_many_pages() -> None:
    alice, bob = Socket(1, "a"), Socket(2, "b")
    fan = fanout(alice, bob)
    full = {"full": True, "parts": [part("watchlist-root")], "topics": ["KO", "MSFT"]}
    for user in (1, 2):
        await fan.on_ui(*updates("watchlist", {"user": user, **full}))
    alice.ids(), bob.ids()
    evil = part("watchlist-quote-MSFT", '<img src=x onerror="steal()">')
    quotes = {"KO": [part("watchlist-quote-KO")], "MSFT": [evil]}
    await fan.on_ui(*shared("watchlist", quotes))
    assert alice.ids() == bob.ids() == ["watchlist-quote-KO"]
    # the same in one per-user message: bob's active part does not cost alice hers
    await fan.on_ui(
        *updates(
            "portfolio",
            wire.ui_update(1, [part("portfolio-pl-KO")], full=False),
            wire.ui_update(2, [part("portfolio-pl-KO", "<script>steal()</script>")], full=False),
        )
    )
    assert alice.ids() == ["portfolio-pl-KO"] and bob.ids() == []
