"""Alembic migrations, programmatically or as a command.

    python -m shared.db.migrate upgrade [REVISION]      # to head by default, under a lock
    python -m shared.db.migrate downgrade [REVISION]    # to base by default, under a lock
    python -m shared.db.migrate wait-head [--timeout S] # exit 0 once the schema is at head

Upgrades and downgrades hold a PostgreSQL advisory lock (:data:`MIGRATION_LOCK_KEY`, scoped to
the database) for their whole run, so two runs at once (a re-run Job, compose and a Job, two
launchers) take turns: the second finds the schema at head and does nothing. ``wait-head`` is
the Kubernetes init container: it polls until the database's revision is this code's head (or
newer: a later release may already have migrated) and fails after ``--timeout`` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from shared.db.engine import create_engine
from shared.settings import async_database_url

__all__ = [
    "MIGRATION_LOCK_KEY",
    "SchemaNotAtHeadError",
    "SchemaStatus",
    "alembic_config",
    "downgrade",
    "downgrade_async",
    "schema_status",
    "upgrade",
    "upgrade_async",
    "wait_for_head",
]

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).with_name("migrations")
# pg_advisory_lock's key (a bigint; advisory locks are per database): crc32 of
# "trading-dashboard:alembic", so it cannot collide with the application's own locks.
MIGRATION_LOCK_KEY = 0x4160_114D
DEFAULT_WAIT_TIMEOUT_S = 300.0
POLL_INTERVAL_S = 1.0


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", async_database_url(url).replace("%", "%%"))
    return config


async def _under_migration_lock(url: str, run: Callable[[], None]) -> None:
    """Run ``run`` (Alembic, in a worker thread: its env runs its own event loop) while this
    process holds the migration lock on a connection of its own."""
    engine = create_engine(url, null_pool=True).execution_options(isolation_level="AUTOCOMMIT")
    key = {"key": MIGRATION_LOCK_KEY}
    try:
        async with engine.connect() as conn:
            if not await conn.scalar(text("SELECT pg_try_advisory_lock(:key)"), key):
                log.info("another migration holds the lock; waiting for it to finish")
                await conn.execute(text("SELECT pg_advisory_lock(:key)"), key)
            try:
                await asyncio.to_thread(run)
            finally:
                await conn.execute(text("SELECT pg_advisory_unlock(:key)"), key)
    finally:
        await engine.dispose()


async def upgrade_async(url: str, revision: str = "head") -> None:
    """Upgrade to ``revision`` under the migration lock."""
    await _under_migration_lock(url, lambda: command.upgrade(alembic_config(url), revision))


async def downgrade_async(url: str, revision: str = "base") -> None:
    await _under_migration_lock(url, lambda: command.downgrade(alembic_config(url), revision))


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade to ``revision`` under the migration lock (call from a thread without a loop)."""
    asyncio.run(upgrade_async(url, revision))


def downgrade(url: str, revision: str = "base") -> None:
    asyncio.run(downgrade_async(url, revision))


# -- waiting for the schema (the init container) ----------------------------------------------


@dataclass(frozen=True)
class SchemaStatus:
    """The database's Alembic revisions against this code's heads."""

    current: frozenset[str]
    heads: frozenset[str]
    unknown: frozenset[str]  # in the database but not in this code: a newer release's

    @property
    def at_head(self) -> bool:
        # Ahead counts: during a rollout the new release has migrated while old pods restart,
        # and migrations stay compatible with the previous release (deploy/README.md).
        return bool(self.current) and (self.current == self.heads or bool(self.unknown))

    def describe(self) -> str:
        current = ", ".join(sorted(self.current)) or "none (not migrated)"
        return f"database at {current}; this code's head is {', '.join(sorted(self.heads))}"


class SchemaNotAtHeadError(RuntimeError):
    """The schema did not reach head within the timeout."""

    def __init__(self, status: SchemaStatus | None, timeout_s: float, error: str = "") -> None:
        self.status = status
        self.timeout_s = timeout_s
        self.error = error
        detail = status.describe() if status else f"database unreachable ({error})"
        super().__init__(f"schema not at head after {timeout_s:g} s: {detail}")


async def schema_status(url: str) -> SchemaStatus:
    script = ScriptDirectory.from_config(alembic_config(url))
    known = {rev.revision for rev in script.walk_revisions()}

    def current_heads(conn: Connection) -> tuple[str, ...]:
        return MigrationContext.configure(conn).get_current_heads()

    engine = create_engine(url, null_pool=True)
    try:
        async with engine.connect() as conn:
            current = frozenset(await conn.run_sync(current_heads))
    finally:
        await engine.dispose()
    return SchemaStatus(current, frozenset(script.get_heads()), current - known)


async def wait_for_head(
    url: str,
    timeout_s: float = DEFAULT_WAIT_TIMEOUT_S,
    interval_s: float = POLL_INTERVAL_S,
) -> SchemaStatus:
    """Poll until the schema is at head; :class:`SchemaNotAtHeadError` after ``timeout_s``.
    An unreachable database counts as not yet (it may be starting too)."""
    deadline = time.monotonic() + timeout_s
    status: SchemaStatus | None = None
    error = ""
    while True:
        try:
            status = await schema_status(url)
            error = ""
        except Exception as exc:  # refused, DNS, auth: report the last one on timeout
            error = f"{type(exc).__name__}: {exc}"
        if status is not None and not error and status.at_head:
            return status
        if time.monotonic() >= deadline:
            raise SchemaNotAtHeadError(None if error else status, timeout_s, error)
        await asyncio.sleep(interval_s)  # a poll interval, not a synchronisation


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m shared.db.migrate")
    parser.add_argument("action", choices=["upgrade", "downgrade", "wait-head"], nargs="?")
    parser.add_argument("revision", nargs="?")
    parser.add_argument("--timeout", type=float, default=DEFAULT_WAIT_TIMEOUT_S)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    url = os.environ["DATABASE_URL"]
    action = args.action or "upgrade"
    if action == "upgrade":
        upgrade(url, args.revision or "head")
    elif action == "downgrade":
        downgrade(url, args.revision or "base")
    else:
        try:
            status = asyncio.run(wait_for_head(url, args.timeout))
        except SchemaNotAtHeadError as exc:
            print(exc, file=sys.stderr)
            return 1
        print(f"schema ready: {status.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
