"""Running a component: mount (through the cache) and event dispatch in one transaction.

Order of checks for an event: unknown event (404) → permissions (401/403) → rate limit
(429) → mount → validation (422) → handler. Any non-2xx rolls the transaction back and
leaves the state as it was before the handler.
"""

from __future__ import annotations

import asyncio
import copy
import inspect
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from shared import wire
from shared.components.base import Component, ComponentContext, FormComponent
from shared.components.errors import (
    FieldError,
    HandlerError,
    RateLimited,
    UnknownEvent,
    ValidationFailed,
)
from shared.components.permissions import check
from shared.components.ratelimit import RateLimiter, RateLimitStatus, parse_rate
from shared.components.scope import UnitOfWork

__all__ = ["Outcome", "dispatch", "mount", "mount_into", "rate_key", "validation_errors"]

_TRANSIENT = ("errors", "values")


@dataclass(slots=True)
class Outcome:
    """The result of an event: the component, 200 or 422, and the rate-limit status."""

    component: Component
    status: int
    rate: RateLimitStatus | None = None


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


async def mount_into(component: Component) -> None:
    """Fill ``component.state``, from the cache when the component has one."""
    key, cache_ = component.cache_key(), component.request.cache
    if key is not None and cache_ is not None:
        cached = cache_.get(*key)
        if cached is not None:
            component.state = cached
            await _catch_up(component)
            return
    await _maybe_await(component.mount())
    if key is not None and cache_ is not None:
        cache_.set(*key, component.state, type(component).cache_ttl)
    await _catch_up(component)


async def _catch_up(component: Component) -> None:
    """Replay the service's latest quotes into a component that follows ticks."""
    book = component.request.prices
    if book is not None and len(book) and wire.PRICES_TICKS in type(component).subscriptions:
        await component.on_ws_message(book.as_tick())


async def mount(
    cls: type[Component], context: ComponentContext, *, component_id: str = "root"
) -> Component:
    """A permission-checked, mounted instance (its own transaction, committed)."""
    component = cls(context, component_id=component_id)
    check(cls.permission_classes, component)
    uow = component._uow = UnitOfWork(context.db)
    try:
        await mount_into(component)
        await uow.commit()
    except BaseException:
        await uow.rollback()
        raise
    finally:
        component._uow = None
    return component


def rate_key(component: Component, event: str) -> str:
    user_id = getattr(component.request.user, "user_id", None)
    return f"{user_id if user_id is not None else 'anon'}:{component.name}:{event}"


def validation_errors(exc: ValidationError) -> dict[str, str]:
    """Pydantic errors as field → first message (``__all__`` for model-level errors)."""
    errors: dict[str, str] = {}
    for error in exc.errors():
        field = ".".join(str(p) for p in error["loc"]) or "__all__"
        errors.setdefault(field, error["msg"])
    return errors


@cache
def _signature_model(handler: Any) -> tuple[type[BaseModel], bool]:
    hints = typing.get_type_hints(handler)
    fields: dict[str, Any] = {}
    takes_kwargs = False
    for name, param in list(inspect.signature(handler).parameters.items())[1:]:
        if param.kind is param.VAR_KEYWORD:
            takes_kwargs = True
            continue
        if param.kind in (param.VAR_POSITIONAL, param.POSITIONAL_ONLY):
            continue
        default = ... if param.default is param.empty else param.default
        hint = hints.get(name, Any)
        if hint is int:  # an id or a count: what a PostgreSQL integer column holds
            hint = Annotated[int, Field(ge=-(2**31), le=2**31 - 1)]
        fields[name] = (hint, default)
    model = create_model(
        f"{handler.__qualname__}_args", __config__=ConfigDict(extra="ignore"), **fields
    )
    return model, takes_kwargs


def _handler_kwargs(handler: Any, payload: Mapping[str, Any]) -> dict[str, Any]:
    model, takes_kwargs = _signature_model(handler)
    try:
        parsed = model.model_validate(dict(payload))
    except ValidationError as exc:
        raise ValidationFailed(validation_errors(exc)) from None
    kwargs = {name: getattr(parsed, name) for name in type(parsed).model_fields}
    if takes_kwargs:
        kwargs.update({k: v for k, v in payload.items() if k not in kwargs})
    return kwargs


@cache
def _is_form_handler(handler: Any) -> bool:
    """``on_submit(self)`` reads ``validated_data``; handlers with parameters
    (``on_cancel(self, order_id: int)``) are validated by their signature instead."""
    return len(inspect.signature(handler).parameters) == 1


async def _call_handler(component: Component, event: str, payload: Mapping[str, Any]) -> None:
    handler = getattr(type(component), f"on_{event}")
    if (
        isinstance(component, FormComponent)
        and component.schema is not None
        and _is_form_handler(handler)
    ):
        try:
            validated = component.schema.model_validate(dict(payload))
        except ValidationError as exc:
            raise ValidationFailed(validation_errors(exc)) from None
        component.validated_data = validated.model_dump()
        await _maybe_await(handler(component))
        return
    await _maybe_await(handler(component, **_handler_kwargs(handler, payload)))


async def dispatch(
    cls: type[Component],
    context: ComponentContext,
    event: str,
    payload: Mapping[str, Any],
    *,
    limiter: RateLimiter | None = None,
    component_id: str = "root",
) -> Outcome:
    """Run ``on_<event>`` as one transaction; see the module docstring for the order.

    Raises :class:`UnknownEvent`, :class:`PermissionDenied`, :class:`RateLimited`, or
    :class:`HandlerError` (caused by the handler's exception, after rollback, with the
    state restored). A validation error returns status 422 with ``state["errors"]``.
    """
    component = cls(context, component_id=component_id)
    if not component.has_event(event):
        raise UnknownEvent(cls.name, event)
    component.answering = event
    check(cls.permission_classes, component)
    uow = component._uow = UnitOfWork(context.db)
    snapshot: dict[str, Any] | None = None
    status: RateLimitStatus | None = None
    try:
        if cls.rate_limit and limiter is not None:
            status = await limiter.hit(
                rate_key(component, event), parse_rate(cls.rate_limit), uow.session_or_none()
            )
            in_session, accepted = uow.has_database, status
            uow.on_rollback(lambda: limiter.release(accepted, in_session=in_session))
        await mount_into(component)
        snapshot = copy.deepcopy(component.state)
        for key in _TRANSIENT:
            component.state.pop(key, None)
        await _call_handler(component, event, payload)
        await uow.commit()
        return Outcome(component, 200, status)
    except (ValidationFailed, FieldError) as exc:
        await uow.rollback()
        errors = exc.errors if isinstance(exc, ValidationFailed) else {exc.field: exc.message}
        component.state = snapshot if snapshot is not None else component.state
        component.state["errors"] = errors
        component.state["values"] = {k: v for k, v in payload.items() if k != "csrf"}
        return Outcome(component, 422, status)
    except (RateLimited, asyncio.CancelledError):
        await uow.rollback()
        raise
    except Exception as exc:
        await uow.rollback()
        if snapshot is not None:
            component.state = snapshot
        raise HandlerError(cls.name, event, component) from exc
    except BaseException:
        await uow.rollback()
        raise
    finally:
        component._uow = None
