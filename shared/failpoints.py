"""Failpoints: named places where a fault test can make the process die on the spot.

``FAILPOINTS="orders.after_commit=die-*"`` makes ``hit("orders.after_commit", key)`` end
the process at once, without a reply, as a SIGKILL at that instant would, when ``key``
matches (exactly, or by prefix with a trailing ``*``). Several are separated by ``;``.
Ignored unless ``APP_ENV`` is ``development`` or ``test``: production never dies on purpose.
"""

from __future__ import annotations

import logging
import os

__all__ = ["hit"]

log = logging.getLogger(__name__)
EXIT_CODE = 137  # what a SIGKILLed process reports


def _armed(name: str) -> list[str]:
    if os.environ.get("APP_ENV", os.environ.get("ENVIRONMENT", "development")) not in (
        "development",
        "test",
    ):
        return []
    specs = (s.partition("=") for s in os.environ.get("FAILPOINTS", "").split(";"))
    return [pattern for point, _eq, pattern in specs if point.strip() == name]


def hit(name: str, key: str = "") -> None:
    for pattern in _armed(name):
        if pattern == key or (pattern.endswith("*") and key.startswith(pattern[:-1])):
            log.critical("failpoint %s hit for %r: exiting now", name, key)
            logging.shutdown()
            os._exit(EXIT_CODE)
