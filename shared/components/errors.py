"""Typed errors of the component framework; each maps to one HTTP status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ComponentError",
    "FieldError",
    "HandlerError",
    "PermissionDenied",
    "RateLimited",
    "UnknownComponent",
    "UnknownEvent",
    "ValidationFailed",
]


class ComponentError(Exception):
    """Base class; ``status`` is the HTTP status the service answers with."""

    status: int = 500


class UnknownComponent(ComponentError):
    status = 404

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(f"unknown component {name!r}")


class UnknownEvent(ComponentError):
    status = 404

    def __init__(self, component: str, event: str) -> None:
        self.component = component
        self.event = event
        super().__init__(f"component {component!r} has no event {event!r}")


class PermissionDenied(ComponentError):
    """401 when the caller is not authenticated, 403 when they lack a permission."""

    def __init__(self, status: int, permission: str, message: str = "") -> None:
        self.status = status
        self.permission = permission
        self.message = message or ("not authenticated" if status == 401 else "permission denied")
        super().__init__(f"{self.message} ({permission})")


class RateLimited(ComponentError):
    """Over the limit: ``retry_after`` whole seconds until the next request is accepted."""

    status = 429

    def __init__(self, retry_after: int, limit: int, window: int, key: str = "") -> None:
        self.retry_after = retry_after
        self.limit = limit
        self.window = window
        self.key = key
        super().__init__(f"rate limit {limit}/{window}s exceeded; retry after {retry_after}s")


class FieldError(ComponentError):
    """Domain validation of one field, raised by a handler (e.g. "Unknown symbol: ZZZZ")."""

    status = 422

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class ValidationFailed(ComponentError):
    """The payload did not validate; ``errors`` maps field → message."""

    status = 422

    def __init__(self, errors: Mapping[str, str]) -> None:
        self.errors = dict(errors)
        super().__init__("; ".join(f"{k}: {v}" for k, v in self.errors.items()))


class HandlerError(ComponentError):
    """A handler raised (``__cause__``); ``component`` holds the pre-handler state."""

    status = 500

    def __init__(self, component_name: str, event: str, component: Any) -> None:
        self.component_name = component_name
        self.event = event
        self.component = component
        super().__init__(f"{component_name}.on_{event} failed")
