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
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from shared import wire

__all__ = [
    "COUNTS",
    "Drained",
    "PartBuffer",
    "PartCounts",
    "build_frames",
    "message_ts_ms",
    "now_ms",
    "prepare_parts",
    "with_oob",
]

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


@dataclass(slots=True)
class _Part:
    component: str
    html: str
    ts_ms: float | None


# What no part may carry, whoever sent it: scripts and other active elements, inline event
# handlers, javascript: URLs, htmx's inline handlers and evaluated values.
_FORBIDDEN = re.compile(
    r"<\s*/?\s*(?:script|iframe|object|embed|base|meta|link|frame|style)\b"
    r"|[\s\"'/]on[a-z]+\s*="
    r"|javascript\s*:"
    r"|\bhx-on\b|\bhx-on[:-]"
    r"|\b(?:hx-vals|hx-headers|hx-vars)\s*=\s*[\"']?\s*(?:js|javascript)\s*:",
    re.IGNORECASE,
)
# Requests a part may make: only to its own component's event URLs (and its fragment)
_REQUEST = re.compile(
    r"\b(?:data-)?hx-(?:get|post|put|patch|delete)\s*=\s*(?:\"([^\"]*)\"|'([^']*)'|([^\s>]+))",
    re.IGNORECASE,
)


# Substrings without which neither pattern can match: a part holding none of them (a tick's
# numbers, nearly every part) is let through after a few fast substring searches.
_SCREEN = (
    "<script", "<iframe", "<object", "<embed", "<base", "<meta", "<link", "<frame", "<style",
    "javascript", " on", "\ton", "\non", "\ron", '"on', "'on", "/on",
)  # fmt: skip


def _unsafe(component: str, html: str) -> str | None:
    """Why ``html`` may not reach a page, or ``None``."""
    low = html.lower()
    if low.count("hx-") == low.count("hx-swap-oob") and not any(s in low for s in _SCREEN):
        return None
    if _FORBIDDEN.search(html):
        return "active content"
    for match in _REQUEST.finditer(html):
        url = next(g for g in match.groups() if g is not None)
        if not url.startswith((f"/c/{component}/", f"/fragments/{component}")):
            return "request to a foreign URL"
    return None


def prepare_parts(
    component: str, raw_parts: Any, dropped: Callable[[str], None] | None = None
) -> list[tuple[str, str]]:
    """A message's parts as ``(id, html with hx-swap-oob)``, dropping what a component may
    not send: anything that is not one element with an id of that component's prefix, and
    anything active (scripts, event handlers, requests to URLs not the component's own).
    ``dropped`` hears why each dropped part was dropped (the gateway counts them)."""
    prefix = wire.ID_PREFIX.get(component)
    prepared: list[tuple[str, str]] = []
    if prefix is None:
        log.warning("dropping parts of unknown component %r", component[:32])
        return prepared
    for raw in raw_parts or ():
        part_id = raw.get("id") if isinstance(raw, dict) else None
        html = raw.get("html") if isinstance(raw, dict) else None
        oob = with_oob(html) if isinstance(html, str) else None
        if not isinstance(part_id, str) or not part_id or oob is None:
            reason = "not an element"
        elif not part_id.startswith(prefix + "-"):
            # services swap their own component's elements only, never the gateway's page
            reason = "foreign id"
        else:
            reason = _unsafe(component, oob) or ""
        if reason:
            log.warning("dropping a %s part (%s): %r", component, reason, str(part_id)[:64])
            if dropped is not None:
                dropped(reason)
            continue
        prepared.append((part_id, oob))  # type: ignore[arg-type]
    return prepared


def build_frames(parts: list[_Part]) -> list[str]:
    """The pending parts as text frames: one frame (every part is a ``<div>``-context
    element, so htmx swaps all parts of a frame; DESIGN.md §3.3)."""
    return ["\n".join(p.html for p in parts)] if parts else []


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
    _parts: dict[str, _Part] = field(default_factory=dict)
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
        ``urgent=False`` for tick-driven parts, sent with the rest of their tick."""
        replaced = 0
        if full:  # a full render supersedes every pending part of its component
            for key in [k for k, p in self._parts.items() if p.component == component]:
                del self._parts[key]
                replaced += 1
        pending = self._parts
        for part_id, html in parts:
            if pending.pop(part_id, None) is not None:  # re-insert: the newest part goes last
                replaced += 1
            pending[part_id] = _Part(component, html, ts_ms)
        COUNTS.received += len(parts)
        COUNTS.coalesced += replaced
        if len(pending) > self.max_parts:
            pending.clear()
            self.overflowed = True
        if parts or self.overflowed:
            self.ready.set()
            if (urgent or self.overflowed or full) and not self.urgent:
                self.urgent = True
                if not self.go.is_set() and self._timer is None:
                    try:
                        loop = asyncio.get_running_loop()
                    except RuntimeError:  # a synchronous caller: nothing to gather for
                        self.go.set()
                    else:
                        self._timer = loop.call_later(self.gather_s, self.release)
        return len(parts)

    def release(self) -> None:
        """Let the sender send what is pending."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.go.set()

    def drain(self) -> Drained:
        parts = list(self._parts.values())
        self._parts.clear()
        overflowed, self.overflowed = self.overflowed, False
        self.urgent = False
        self.ready.clear()
        self.go.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        stamps = [p.ts_ms for p in parts if p.ts_ms is not None]
        return Drained(build_frames(parts), len(parts), min(stamps, default=None), overflowed)


def now_ms() -> float:
    return time.time() * 1000
