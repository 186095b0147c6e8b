"""Chart geometry: bar widths."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shared.charts import bar_width


@pytest.mark.parametrize(
    ("percent", "width"),
    [
        (Decimal("78.14"), "78.1"),
        (Decimal("78.15"), "78.2"),
        (0, "0.0"),
        (Decimal("-3"), "0.0"),
        (Decimal("100"), "100.0"),
        (Decimal("130.5"), "100.0"),
        (55.5, "55.5"),
    ],
)
def test_bar_width_is_clamped_to_the_viewbox(percent: Decimal | float, width: str) -> None:
    assert bar_width(percent) == width


def test_bar_width_scales_to_another_viewbox() -> None:
    assert bar_width(Decimal(50), full=80) == "40.0"
    assert bar_width(Decimal(150), full=80) == "80.0"
