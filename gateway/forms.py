"""Request bodies read with a cap: nothing past the cap is read, parsed or stored.

The gateway reads two kinds of body itself: a component event, passed on to its service
as bytes, and the sign-in and sign-out forms, a few short fields. Starlette's own form
parser has no size limit for an urlencoded field and writes a multipart file of any size
to disk, so neither goes through it.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import Request

__all__ = ["MAX_FORM_BYTES", "read_capped", "small_form"]

MAX_FORM_BYTES = 4096  # a sign-in form is ~150 bytes
_MAX_FIELDS = 8
_URLENCODED = "application/x-www-form-urlencoded"


async def read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or ``None`` once it is longer than ``limit`` bytes (read no further)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def small_form(request: Request) -> dict[str, str] | None:
    """An urlencoded form of at most :data:`MAX_FORM_BYTES` and a few fields (the first
    value of each name), or ``None``: another type of body, or too large."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != _URLENCODED:
        return None
    body = await read_capped(request, MAX_FORM_BYTES)
    if body is None:
        return None
    try:
        pairs = parse_qsl(
            body.decode("utf-8", "replace"), keep_blank_values=True, max_num_fields=_MAX_FIELDS
        )
    except ValueError:  # more fields than a form of ours has
        return None
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form
