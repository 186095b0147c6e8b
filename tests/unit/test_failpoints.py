"""Failpoints end the process only where armed, for the key armed, and never in production."""

from __future__ import annotations

import subprocess
import sys

import pytest

from shared import failpoints

SCRIPT = (
    "from shared import failpoints; failpoints.hit('orders.after_commit', {key!r}); print('alive')"
)


def run(key: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", SCRIPT.format(key=key)],
        env={"PATH": "", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_an_armed_failpoint_kills_the_process_for_its_key_only() -> None:
    armed = {"FAILPOINTS": "orders.after_commit=die-*;other=x", "APP_ENV": "test"}
    assert run("die-123", armed).returncode == failpoints.EXIT_CODE
    kept = run("keep-123", armed)
    assert kept.returncode == 0 and kept.stdout.strip() == "alive"


def test_production_never_dies_on_purpose() -> None:
    env = {"FAILPOINTS": "orders.after_commit=die-*", "APP_ENV": "production"}
    assert run("die-123", env).stdout.strip() == "alive"


def test_nothing_armed_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FAILPOINTS", raising=False)
    failpoints.hit("orders.after_commit", "die-1")  # returns
