"""A live component instance, and what to publish after it handled a message."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from shared.components.base import Component, LiveResult
from shared.components.rendering import Changes, PartsTracker

__all__ = ["NO_CHANGES", "LiveInstance", "changes_after", "stamp"]


@dataclass(eq=False)
class LiveInstance:
    component: Component
    tracker: PartsTracker = field(default_factory=PartsTracker)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


def stamp(message: Mapping[str, Any]) -> Any:
    ts = message.get("ts")
    return ts if isinstance(ts, str | int | float) else datetime.now(UTC).isoformat()


NO_CHANGES = Changes(False, [])
# results that name parts; a tuple, as an inline union would be rebuilt on every call
_NAMED = (set, frozenset, list, tuple, dict)


def changes_after(instance: LiveInstance, result: LiveResult) -> Changes:
    """What to publish after ``on_ws_message`` returned ``result``: nothing (``False``),
    the parts it named, or what a comparison with the last publication finds."""
    if result is False:
        return NO_CHANGES
    if isinstance(result, _NAMED):
        return instance.tracker.changed(instance.component, result)
    return instance.tracker.changes(instance.component)
