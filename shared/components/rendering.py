"""Rendering: the whole fragment, or only the parts (blocks) whose context changed.

Output is data before HTML: :class:`Rendered` keeps template and context, :class:`Part`
an element id and its HTML.
"""

from __future__ import annotations

import copy
import sys
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from jinja2_fragments import render_block

from shared.components.base import Component

__all__ = [
    "Changes",
    "Part",
    "PartsTracker",
    "Rendered",
    "base_context",
    "environment_for",
    "money",
    "pct",
    "qty",
    "render",
    "render_parts",
    "signed",
]


@dataclass(frozen=True, slots=True)
class Rendered:
    template_name: str
    context: dict[str, Any]
    html: str


@dataclass(frozen=True, slots=True)
class Part:
    id: str
    html: str

    def to_wire(self) -> dict[str, str]:
        return {"id": self.id, "html": self.html}


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return value if isinstance(value, Decimal) else Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None


def _round(number: Decimal, places: int) -> Decimal:
    return number.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def money(value: Any, places: int = 2) -> str:
    """``1234.5`` → ``"1,234.50"`` (half up)."""
    number = _decimal(value)
    return "" if number is None else f"{_round(number, places):,.{places}f}"


def pct(value: Any) -> str:
    """``12.345`` → ``"12.35"`` (add the ``%`` in the template)."""
    return money(value, 2)


def qty(value: Any) -> str:
    """``1500`` → ``"1,500"``; fractional quantities keep their decimals."""
    number = _decimal(value)
    if number is None:
        return ""
    if number == number.to_integral_value():
        return f"{int(number):,}"
    return f"{number.normalize():,f}"


def signed(value: Any, places: int = 2) -> str:
    """``12.3`` → ``"+12.30"``, ``-4`` → ``"-4.00"``."""
    number = _decimal(value)
    return "" if number is None else f"{_round(number, places):+,.{places}f}"


def template_dir(cls: type[Component]) -> Path:
    if cls.template_dir is not None:
        return Path(cls.template_dir)
    module_file = getattr(sys.modules[cls.__module__], "__file__", None)
    if module_file is None:
        raise RuntimeError(f"cannot locate templates for {cls!r}; set template_dir")
    return Path(module_file).resolve().parent / "templates"


@cache
def environment_for(directory: Path) -> Environment:
    """The (shared, cached) Jinja environment of one templates directory."""
    env = Environment(
        loader=FileSystemLoader(str(directory)),
        autoescape=select_autoescape(default=True, default_for_string=True),
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,  # templates ship with the code: no stat() per render
    )
    env.filters.update(money=money, pct=pct, qty=qty, signed=signed)
    return env


def base_context(component: Component) -> dict[str, Any]:
    """Variables every template and block sees."""
    return {
        "component": component.name,
        "component_id": component.component_id,
        "root_id": component.root_id,
        "optimistic": component.optimistic,
        "event_url": component.event_url,
        **component.get_context(),
    }


def render(component: Component) -> Rendered:
    """The whole fragment; context ``state`` plus :func:`base_context`."""
    context = {**base_context(component), "state": component.state}
    env = environment_for(template_dir(type(component)))
    html = env.get_template(component.template_name).render(context)
    return Rendered(component.template_name, context, html)


def render_parts(component: Component, ids: list[str] | None = None) -> list[Part]:
    """Render the blocks of ``ids`` (default: every live part), each a whole element."""
    specs = component.live_parts()
    env = environment_for(template_dir(type(component)))
    base = base_context(component)
    return [
        Part(part_id, render_block(env, component.template_name, block, **{**base, **ctx}))
        for part_id, (block, ctx) in specs.items()
        if ids is None or part_id in ids
    ]


@dataclass(frozen=True, slots=True)
class Changes:
    """What to publish: nothing, some parts, or a full render (one part, the root)."""

    full: bool
    parts: list[Part]

    def __bool__(self) -> bool:
        return bool(self.parts)


class PartsTracker:
    """Remembers what was last published for one live component instance.

    It keeps a copy of each part's context and compares by equality: on a tick most
    parts of most users are unchanged, and ``==`` on small dicts is far cheaper than
    serialising them; only changed contexts are copied again.
    """

    def __init__(self) -> None:
        self._snapshot: dict[str, Any] | None = None

    def full(self, component: Component) -> Changes:
        """A full render; the snapshot becomes the current parts."""
        self._snapshot = copy.deepcopy(self._current(component))
        if not type(component).live_root and component.live_parts():
            return Changes(True, render_parts(component))
        return Changes(True, [Part(component.root_id, render(component).html)])

    def changes(self, component: Component) -> Changes:
        """Only the parts whose context changed since the last call (or a full render)."""
        current = self._current(component)
        previous = self._snapshot
        if previous is None or list(current) != list(previous):
            return self.full(component)
        changed = [pid for pid, ctx in current.items() if ctx != previous[pid]]
        if not changed:
            return Changes(False, [])
        for pid in changed:
            previous[pid] = copy.deepcopy(current[pid])
        if changed == [_WHOLE]:
            return Changes(True, [Part(component.root_id, render(component).html)])
        return Changes(False, render_parts(component, changed))

    @staticmethod
    def _current(component: Component) -> dict[str, Any]:
        specs = component.live_parts()
        if not specs:
            return {_WHOLE: component.state}
        return {pid: ctx for pid, (_block, ctx) in specs.items()}


_WHOLE = "\x00whole"
