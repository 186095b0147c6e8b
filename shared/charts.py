"""Server-rendered chart geometry (the browser draws SVG it is given, computes nothing)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal

__all__ = ["SPARK_HEIGHT", "SPARK_WIDTH", "bar_width", "sparkline_points"]

# Integer coordinates in a large viewBox (the SVG scales it): short ``points`` on the wire
SPARK_WIDTH = 290
SPARK_HEIGHT = 100


def sparkline_points(
    values: Sequence[Decimal], width: int = SPARK_WIDTH, height: int = SPARK_HEIGHT
) -> str:
    """SVG polyline ``points`` (integers) for ``values`` scaled into ``width`` × ``height``.

    The highest value is at the top (y = 1), the lowest at the bottom (y = height − 1);
    a flat series is drawn through the middle.
    """
    if not values:
        return ""
    if len(values) == 1:
        values = [values[0], values[0]]
    low, high = min(values), max(values)
    span = high - low
    step = Decimal(width) / (len(values) - 1)
    inner = Decimal(height - 2)
    points = []
    for i, v in enumerate(values):
        y = Decimal(height) / 2 if span == 0 else 1 + inner * (high - v) / span
        points.append(f"{round(step * i)},{round(y)}")
    return " ".join(points)


def bar_width(percent: Decimal | float | int | str, full: int = 100) -> str:
    """The SVG ``width`` of a bar showing ``percent`` in a ``full``-wide viewBox.

    Clamped to ``0..full`` (a 130 % utilisation draws a full bar), one decimal place.
    """
    value = Decimal(str(percent)) * full / 100
    clamped = min(max(value, Decimal(0)), Decimal(full))
    return f"{clamped.quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}"
