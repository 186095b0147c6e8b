"""rate_limit_hit(): a hit counted and added under its key's lock, in one round trip

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 01:20:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# A statement reads the rows committed when it began, so a count in the statement that
# waited for the lock could miss a hit committed meanwhile. Each statement of a function
# begins after the one before it (read committed): the count, after the lock, sees every
# hit its previous holder committed. Forget the key's hits older than the window, count the
# rest, and add this one if that leaves room; the row as it was before this hit.
_CREATE = """
CREATE FUNCTION rate_limit_hit(
    hit_key varchar, hit_at timestamptz, cut timestamptz, hit_limit integer
) RETURNS TABLE (held integer, oldest timestamptz, hit_id bigint)
LANGUAGE plpgsql VOLATILE AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended(hit_key, 0));
    RETURN QUERY
    WITH gone AS (DELETE FROM rate_limit_hits r WHERE r.key = hit_key AND r.at <= cut),
    counted AS (
        SELECT count(*)::integer AS n, min(r.at) AS first_at FROM rate_limit_hits r
        WHERE r.key = hit_key AND r.at > cut
    ),
    added AS (
        INSERT INTO rate_limit_hits (key, at) SELECT hit_key, hit_at FROM counted
        WHERE counted.n < hit_limit
        RETURNING rate_limit_hits.id
    )
    SELECT counted.n, counted.first_at, (SELECT added.id FROM added) FROM counted;
END
$$
"""


def upgrade() -> None:
    op.execute(_CREATE)


def downgrade() -> None:
    op.execute("DROP FUNCTION rate_limit_hit(varchar, timestamptz, timestamptz, integer)")
