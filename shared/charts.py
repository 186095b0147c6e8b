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
    # pixel geometry: floats are exact enough (the prices themselves stay Decimal), and
    # several times cheaper than Decimal arithmetic on every watched symbol's every tick
    ys = [float(v) for v in values]
    low, high = min(ys), max(ys)
    span = high - low
    step = width / (len(ys) - 1)
    if span == 0:
        middle = round(height / 2)
        return " ".join(f"{round(step * i)},{middle}" for i in range(len(ys)))
    scale = (height - 2) / span
    return " ".join(f"{round(step * i)},{round(1 + scale * (high - y))}" for i, y in enumerate(ys))


def bar_width(percent: Decimal | float | int | str, full: int = 100) -> str:
    """The SVG ``width`` of a bar showing ``percent`` in a ``full``-wide viewBox.

    Clamped to ``0..full`` (a 130 % utilisation draws a full bar), one decimal place.
    """
    value = Decimal(str(percent)) * full / 100
    clamped = min(max(value, Decimal(0)), Decimal(full))
    return f"{clamped.quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}"
