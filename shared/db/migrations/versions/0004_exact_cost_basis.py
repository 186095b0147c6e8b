"""positions.avg_cost to 12 places: the cost basis is kept exactly, to the cent

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30 21:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column(
        "positions",
        "avg_cost",
        type_=sa.Numeric(precision=28, scale=12),
        existing_type=sa.Numeric(precision=18, scale=4),
        existing_nullable=False,
    )


def downgrade() -> None:
    op.alter_column(
        "positions",
        "avg_cost",
        type_=sa.Numeric(precision=18, scale=4),
        existing_type=sa.Numeric(precision=28, scale=12),
        existing_nullable=False,
    )
