"""The bus's JSON: what services publish arrives as the same JSON object, money exact."""

from __future__ import annotations

from decimal import Decimal

import pytest
from markupsafe import Markup

from shared.bus import decode, encode


def test_money_travels_as_exact_strings_and_markup_as_text() -> None:
    payload = {
        "prices": {"AAPL": {"last": Decimal("189.10"), "bid": Decimal("0.000001")}},
        "html": Markup('<div id="x">&amp;</div>'),
        "ts": 1733000000.25,
        "seq": 7,
        "parts": [("id", "<b>é</b>")],
    }
    assert decode(encode(payload)) == {
        "prices": {"AAPL": {"last": "189.10", "bid": "0.000001"}},
        "html": '<div id="x">&amp;</div>',
        "ts": 1733000000.25,
        "seq": 7,
        "parts": [["id", "<b>é</b>"]],
    }


def test_integer_keys_become_strings_as_in_json() -> None:
    assert decode(encode({"by_account": {7: "x"}})) == {"by_account": {"7": "x"}}


def test_what_json_cannot_carry_is_refused() -> None:
    with pytest.raises(TypeError, match="set"):
        encode({"x": {1, 2}})
    with pytest.raises(ValueError, match="not a JSON object"):
        decode(b"[1, 2]")
