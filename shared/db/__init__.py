"""PostgreSQL access: the models, the engine, migrations and demo data."""

from shared.db.engine import create_engine, session_factory

__all__ = ["create_engine", "session_factory"]
