"""The per-socket buffer: newest part per element id, drained into out-of-band swap frames.

Every part is a whole element, so keeping only the newest html per id loses nothing of the final
state (DESIGN.md §3.3). A full render of a component supersedes every pending part of that
component. Bounded: past ``max_parts`` ids the buffer is emptied and marked ``overflowed``, and
the socket asks the services for full renders instead.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared import wire

__all__ = ["Drained", "PartBuffer", "build_frames", "message_ts_ms", "with_oob"]

log = logging.getLogger(__name__)

_FIRST_TAG = re.compile(r"^\s*<([A-Za-z][A-Za-z0-9-]*)")
_OOB_ATTR = re.compile(r"\shx-swap-oob\s*=", re.IGNORECASE)
_OOB = ' hx-swap-oob="true"'


def with_oob(html: str) -> str | None:
    """``html`` with ``hx-swap-oob="true"`` in its first tag; ``None`` if it is not an element."""
    match = _FIRST_TAG.match(html)
    if match is None:
        return None
    end = match.end()
    tag_close = html.find(">", end)
    if _OOB_ATTR.search(html, end, tag_close if tag_close >= 0 else len(html)):
        return html.lstrip()
    return html[match.start(1) - 1 : end].lstrip() + _OOB + html[end:]


def message_ts_ms(value: Any) -> float | None:
    """A message ``ts`` as epoch milliseconds (numbers are epoch ms; ISO strings are parsed)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value).timestamp() * 1000
        except ValueError:
            return None
    return None


_COMPONENT_PREFIXES = frozenset(wire.ID_PREFIX.values())


@dataclass(slots=True)
class _Part:
    component: str
    html: str
    ts_ms: float | None

    @property
    def is_row(self) -> bool:
        return self.html.lstrip()[:3].lower() == "<tr"


def build_frames(parts: list[_Part]) -> list[str]:
    """The pending parts as text frames, normally exactly one.

    htmx parses a frame as one fragment whose context is set by its first element, so table
    rows go first. A row may only move ahead of parts of other components (within a component
    the order of parts is the order of state); otherwise it starts the next frame.
    """
    frames: list[list[_Part]] = [[]]
    for part in parts:
        current = frames[-1]
        if part.is_row and current and not current[0].is_row:
            if any(p.component == part.component for p in current):
                frames.append([part])
            else:
                current.insert(0, part)
        else:
            current.append(part)
    return ["\n".join(p.html for p in frame) for frame in frames if frame]


@dataclass(slots=True)
class Drained:
    frames: list[str]
    parts: int
    oldest_ts_ms: float | None
    overflowed: bool


@dataclass
class PartBuffer:
    """What is waiting to be sent to one socket. Writers never block; one sender drains."""

    max_parts: int = 5000
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    overflowed: bool = False
    _parts: dict[str, _Part] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self._parts)

    def put(self, message: dict[str, Any]) -> int:
        """Add one ``ui.*`` message's parts; the number of parts accepted."""
        component = str(message.get("component", ""))
        ts_ms = message_ts_ms(message.get("ts"))
        if message.get("full"):
            for key in [k for k, p in self._parts.items() if p.component == component]:
                del self._parts[key]
        accepted = 0
        for raw in message.get("parts") or ():
            part_id = raw.get("id") if isinstance(raw, dict) else None
            html = raw.get("html") if isinstance(raw, dict) else None
            oob = with_oob(html) if isinstance(html, str) else None
            if not isinstance(part_id, str) or not part_id or oob is None:
                log.warning("dropping a %s part that is not an element with an id", component)
                continue
            if part_id.split("-", 1)[0] not in _COMPONENT_PREFIXES:
                # services swap component elements only, never the gateway's own page
                log.warning("dropping a %s part with foreign id %r", component, part_id[:64])
                continue
            self._parts.pop(part_id, None)  # re-insert: the newest part goes last
            self._parts[part_id] = _Part(component, oob, ts_ms)
            accepted += 1
        if len(self._parts) > self.max_parts:
            self._parts.clear()
            self.overflowed = True
        if accepted or self.overflowed:
            self.ready.set()
        return accepted

    def drain(self) -> Drained:
        parts = list(self._parts.values())
        self._parts.clear()
        overflowed, self.overflowed = self.overflowed, False
        self.ready.clear()
        stamps = [p.ts_ms for p in parts if p.ts_ms is not None]
        return Drained(build_frames(parts), len(parts), min(stamps, default=None), overflowed)


def now_ms() -> float:
    return time.time() * 1000
