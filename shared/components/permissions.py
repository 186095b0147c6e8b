"""Permission classes: ``permission_classes = [IsAuthenticated, HasTradingPermission]``.

All listed classes must pass. An unauthenticated caller is refused with 401, an
authenticated one lacking a permission with 403.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from shared.components.errors import PermissionDenied
from shared.identity import PERM_TRADE

if TYPE_CHECKING:
    from shared.components.base import Component

__all__ = ["BasePermission", "HasPermission", "HasTradingPermission", "IsAuthenticated", "check"]


class BasePermission:
    """Subclass and override :meth:`has_permission`."""

    message = "permission denied"

    def has_permission(self, user: Any, component: Component) -> bool:
        return True


class IsAuthenticated(BasePermission):
    message = "not authenticated"

    def has_permission(self, user: Any, component: Component) -> bool:
        return bool(getattr(user, "is_authenticated", False))


class HasPermission(BasePermission):
    """Requires ``perm`` (set on a subclass) in the identity's permissions."""

    perm = ""

    def has_permission(self, user: Any, component: Component) -> bool:
        return bool(getattr(user, "is_authenticated", False)) and bool(user.has_perm(self.perm))


class HasTradingPermission(HasPermission):
    perm = PERM_TRADE
    message = "trading permission required"


def check(permission_classes: Iterable[type[BasePermission]], component: Component) -> None:
    """Raise :class:`PermissionDenied` (401 or 403) unless every permission passes."""
    user = component.request.user
    for permission_class in permission_classes:
        permission = permission_class()
        if not permission.has_permission(user, component):
            status = 403 if getattr(user, "is_authenticated", False) else 401
            raise PermissionDenied(status, permission_class.__name__, permission.message)
