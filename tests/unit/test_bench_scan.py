"""The load generator reads shown prices from the HTML of each frame: which component a
row belongs to, its symbol and its last price, in frame order."""

from __future__ import annotations

from bench.live_frames import Relayed, Sock, scan
from bench.live_support import GenConfig, _Gen

FRAME = (
    b'<div class="cells" id="portfolio-last-AMD" data-symbol="AMD" hx-swap-oob="true">'
    b'<div role="cell" class="num last-price">1,156.10</div></div>\n'
    b'<section aria-labelledby="watchlist-root-title" data-id="risk-x">'
    b'<div role="row" id="watchlist-row-EPT" data-symbol="EPT">'
    b'<div role="cell" class="num bid">88.39</div>'
    b'<div role="cell" class="num last-price flash-up">88.41</div></div></section>'
)


def test_a_frame_is_read_in_order_and_only_element_ids_name_a_component() -> None:
    assert scan(FRAME) == [
        (b"portfolio", None, None),
        (None, b"AMD", None),
        (None, None, b"1,156.10"),
        (b"watchlist", None, None),  # not the aria-labelledby, not the data-id
        (None, b"EPT", None),
        (None, None, b"88.41"),
    ]
    assert scan(b'id="orders-list"') == []  # not a component's prefix
    assert scan(b'id="order-list"') == [(b"order", None, None)]  # at the frame's start


def test_each_shown_price_is_matched_to_the_tick_that_set_it() -> None:
    gen = _Gen(GenConfig("ws://x/ws", "http://x", "nats://x", [("c", "t", None)]))
    gen.window = (0.0, 10_000.0, 20_000.0)
    gen.ticks.on_tick({"ts": 1_000, "prices": {"AMD": {"last": "1156.1"}, "EPT": {"last": "88.4"}}})
    gen.ticks.on_tick({"ts": 2_000, "prices": {"EPT": {"last": "88.41"}}})
    sock: Sock = gen.socks[0]
    gen.on_frame(sock, FRAME, 2_050.0)
    assert gen.samples == {"portfolio": [1_050.0], "watchlist": [50.0]}
    gen.on_frame(sock, FRAME, 2_300.0)  # shown again: not a new sample
    assert gen.samples == {"portfolio": [1_050.0], "watchlist": [50.0]}


PNL_FRAME = (
    b'<div class="cells" id="portfolio-pl-AMD" hx-swap-oob="true"><div role="cell" '
    b'class="num pnl pnl-pos">+1,530.00</div><div role="cell" class="num day-chg">+1.00</div>'
    b"</div>"
)


def test_a_relayed_trader_is_timed_on_both_sockets_apart_from_the_rest() -> None:
    trader = Relayed(7, {"AMD": (10, "1003.10")})  # P&L 1,530.00 ⇔ last 1,156.10
    sockets = [("c", "t", trader), ("d", "u", None)]
    gen = _Gen(GenConfig("ws://x/ws", "http://x", "nats://x", sockets, relay_url="ws://x:2/ws"))
    assert [(s.relayed, s.relay) for s in gen.relays] == [(trader, True)]
    gen.window = (0.0, 10_000.0, 20_000.0)
    gen.ticks.on_tick({"ts": 1_000, "prices": {"AMD": {"last": "1156.1"}, "EPT": {"last": "88.4"}}})
    gen.ticks.on_tick({"ts": 2_000, "prices": {"EPT": {"last": "88.41"}}})
    relayed, plain = gen.socks
    gen.on_frame(gen.relays[0], FRAME, 2_020.0)
    gen.on_frame(relayed, FRAME, 2_050.0)
    gen.on_frame(plain, FRAME, 2_100.0)
    for sock, at in ((gen.relays[0], 1_030.0), (relayed, 1_060.0), (plain, 1_070.0)):
        gen.on_frame(sock, PNL_FRAME, at)  # the P&L of the tick at 1,000
    gen.on_frame(relayed, PNL_FRAME, 2_500.0)  # shown again: not a new sample
    assert gen.pairs == {
        "relay": [1_020.0, 20.0],
        "gateway": [1_050.0, 50.0],
        "relay-pnl": [30.0],
        "gateway-pnl": [60.0],  # the untraced trader's P&L is not read
    }
    assert gen.samples == {"portfolio": [1_050.0, 1_100.0], "watchlist": [50.0, 100.0]}
    assert (gen.frames, gen.relay_frames) == (5, 2)  # the relay's frames counted apart
