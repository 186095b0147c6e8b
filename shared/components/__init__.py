"""The component framework: the seed's component API and the service contract.

A service declares components in a :class:`Registry` and builds its app with
:func:`create_component_app`; see ``service.py`` and ``live.py``.
"""

from shared.components.base import Component, ComponentContext, FormComponent, PartSpec
from shared.components.cache import MountCache
from shared.components.errors import (
    ComponentError,
    FieldError,
    HandlerError,
    PermissionDenied,
    RateLimited,
    UnknownComponent,
    UnknownEvent,
    ValidationFailed,
)
from shared.components.live import LiveSessions
from shared.components.permissions import (
    BasePermission,
    HasPermission,
    HasTradingPermission,
    IsAuthenticated,
)
from shared.components.pricebook import PriceBook
from shared.components.ratelimit import (
    InMemoryRateLimiter,
    PostgresRateLimiter,
    Rate,
    RateLimiter,
    parse_rate,
)
from shared.components.registry import Registry, registry
from shared.components.rendering import Part, PartsTracker, Rendered, render, render_parts
from shared.components.runtime import Outcome, dispatch, mount
from shared.components.service import ComponentOptions, create_component_app

__all__ = [
    "BasePermission",
    "Component",
    "ComponentContext",
    "ComponentError",
    "ComponentOptions",
    "FieldError",
    "FormComponent",
    "HandlerError",
    "HasPermission",
    "HasTradingPermission",
    "InMemoryRateLimiter",
    "IsAuthenticated",
    "LiveSessions",
    "MountCache",
    "Outcome",
    "Part",
    "PartSpec",
    "PartsTracker",
    "PermissionDenied",
    "PostgresRateLimiter",
    "PriceBook",
    "Rate",
    "RateLimited",
    "RateLimiter",
    "Registry",
    "Rendered",
    "UnknownComponent",
    "UnknownEvent",
    "ValidationFailed",
    "create_component_app",
    "dispatch",
    "mount",
    "parse_rate",
    "registry",
    "render",
    "render_parts",
]
