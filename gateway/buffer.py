"""The per-socket buffer: newest part per element id, drained into out-of-band swap frames.

Every part is a whole element, so keeping only the newest html per id loses nothing of the final
state (DESIGN.md §3.3). A full render of a component supersedes every pending part of that
component. Bounded: past ``max_parts`` ids the buffer is emptied and marked ``overflowed``, and
the socket asks the services for full renders instead.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from gateway import markup
from gateway.markup import with_oob
from shared import wire

__all__ = [
    "COUNTS",
    "Drained",
    "PartBuffer",
    "PartCounts",
    "build_frames",
    "message_ts_ms",
    "now_ms",
    "prepare_groups",
    "prepare_parts",
    "with_oob",
]

log = logging.getLogger(__name__)

K = TypeVar("K")


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


def prepare_parts(
    component: str, raw_parts: Any, dropped: Callable[[str], None] | None = None
) -> list[tuple[str, str]]:
    """A message's parts as ``(id, html with hx-swap-oob)``, dropping what a component may
    not send: anything :func:`gateway.markup.check` refuses (not exactly one element of the
    HTML the components use, an id not the part's or not the component's, anything active,
    a request to a URL not the component's own). ``dropped`` hears why each dropped part
    was dropped (the gateway counts them)."""
    if component not in wire.ID_PREFIX:
        log.warning("dropping parts of unknown component %r", component[:32])
        return []
    return _elements(component, raw_parts, dropped)


def _elements(
    component: str, raw_parts: Any, dropped: Callable[[str], None] | None
) -> list[tuple[str, str]]:
    elements: list[tuple[str, str]] = []
    for raw in raw_parts or ():
        if isinstance(raw, dict):
            part_id, html = raw.get("id"), raw.get("html")
        else:
            part_id = html = None
        if not isinstance(part_id, str) or not isinstance(html, str):
            _drop(component, part_id, "not an element", dropped)
            continue
        oob, reason = markup.swappable(component, part_id, html)
        if oob is None:
            _drop(component, part_id, reason or "not an element", dropped)
        else:
            elements.append((part_id, oob))
    return elements


def prepare_groups(
    component: str, groups: dict[K, Any], dropped: Callable[[str], None] | None = None
) -> dict[K, list[tuple[str, str]]]:
    """:func:`prepare_parts` for each group of parts of one message (its topics, its
    users' updates)."""
    if component not in wire.ID_PREFIX:
        log.warning("dropping parts of unknown component %r", component[:32])
        return {}
    return {key: _elements(component, raw, dropped) for key, raw in groups.items()}


def _drop(component: str, part_id: Any, reason: str, dropped: Callable[[str], None] | None) -> None:
    log.warning("dropping a %s part (%s): %r", component, reason, str(part_id)[:64])
    if dropped is not None:
        dropped(reason)


def build_frames(htmls: list[str]) -> list[str]:
    """The pending parts as text frames: one frame (every part is a ``<div>``-context
    element, so htmx swaps all parts of a frame; DESIGN.md §3.3)."""
    return ["\n".join(htmls)] if htmls else []


@dataclass(slots=True)
class Drained:
    frames: list[str]
    parts: int
    oldest_ts_ms: float | None
    overflowed: bool


@dataclass
class PartCounts:
    """Parts this process's sockets took in, and those a newer one replaced before they
    were sent (coalesced): what the newest-wins buffers saved (``/metrics``)."""

    received: int = 0
    coalesced: int = 0


COUNTS = PartCounts()


@dataclass
class PartBuffer:
    """What is waiting to be sent to one socket. Writers never block; one sender drains."""

    max_parts: int = 5000
    gather_s: float = 0.01
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    """Something is pending."""
    go: asyncio.Event = field(default_factory=asyncio.Event)
    """Send now: ``gather_s`` after an urgent part, or when the fan-out says every
    component is done with the tick of the pending parts (:meth:`release`)."""
    overflowed: bool = False
    urgent: bool = False
    """Something pending is not tick-driven (a full render, an event's result)."""
    # id → html, and id → ts: strings and floats, which the garbage collector does not track
    # (a tuple per part per socket made the collector run dozens of times a second)
    _parts: dict[str, str] = field(default_factory=dict)
    _stamps: dict[str, float] = field(default_factory=dict)
    _timer: asyncio.TimerHandle | None = None

    def __len__(self) -> int:
        return len(self._parts)

    def put(self, message: dict[str, Any]) -> int:
        """Add one ``{component, full, parts, ts}`` update; the number of parts accepted."""
        component = str(message.get("component", ""))
        prepared = prepare_parts(component, message.get("parts"))
        ts_ms = message_ts_ms(message.get("ts"))
        return self.put_prepared(component, prepared, ts_ms, full=bool(message.get("full")))

    def put_prepared(
        self,
        component: str,
        parts: list[tuple[str, str]],
        ts_ms: float | None,
        *,
        full: bool = False,
        urgent: bool = True,
    ) -> int:
        """Add parts checked by :func:`prepare_parts` (shared by every socket they go to);
        ``urgent=False`` for tick-driven parts, sent with the rest of their tick. A full
        render supersedes every pending part of its component (ids with its prefix)."""
        if full:
            own = wire.ID_PREFIX.get(component, component) + "-"
            superseded = [k for k in self._parts if k.startswith(own)]
            for key in superseded:
                del self._parts[key]
                self._stamps.pop(key, None)
            COUNTS.coalesced += len(superseded)
        self._take(parts, ts_ms)
        if parts or self.overflowed:
            self._pending(urgent or self.overflowed or full)
        return len(parts)

    def put_tick(self, parts: list[tuple[str, str]], ts_ms: float | None) -> None:
        """:meth:`put_prepared` of tick-driven parts (not urgent, not a full render): the
        fan-out's hot path, a few calls per socket per tick."""
        self._take(parts, ts_ms)
        if self.overflowed:
            self._pending(True)  # the sender asks for full renders instead, soon
        elif parts:
            self.ready.set()

    def _take(self, parts: list[tuple[str, str]], ts_ms: float | None) -> None:
        """The newest part per id, last; past ``max_parts`` the buffer is emptied and
        marked overflowed."""
        pending, stamps = self._parts, self._stamps
        before = len(pending)
        for part_id, html in parts:
            if part_id in pending:  # re-insert: the newest part goes last
                del pending[part_id]
            pending[part_id] = html
        if ts_ms is not None:
            for part_id, _html in parts:
                stamps[part_id] = ts_ms
        elif stamps:  # the newer parts have no time: neither have their ids any more
            for part_id, _html in parts:
                stamps.pop(part_id, None)
        COUNTS.received += len(parts)
        COUNTS.coalesced += before + len(parts) - len(pending)
        if len(pending) > self.max_parts:
            pending.clear()
            stamps.clear()
            self.overflowed = True

    def _pending(self, urgent: bool) -> None:
        """Something is pending; if ``urgent``, send it ``gather_s`` from now."""
        self.ready.set()
        if urgent and not self.urgent:
            self.urgent = True
            if not self.go.is_set() and self._timer is None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:  # a synchronous caller: nothing to gather for
                    self.go.set()
                else:
                    self._timer = loop.call_later(self.gather_s, self.release)

    def release(self) -> None:
        """Let the sender send what is pending."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.go.set()

    def drain(self) -> Drained:
        htmls = list(self._parts.values())
        oldest = min(self._stamps.values()) if self._stamps else None
        self._parts.clear()
        self._stamps.clear()
        overflowed, self.overflowed = self.overflowed, False
        self.urgent = False
        self.ready.clear()
        self.go.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return Drained(build_frames(htmls), len(htmls), oldest, overflowed)


def now_ms() -> float:
    return time.time() * 1000
