"""job_leases: jobs that run once across the cluster's nodes.

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-07

A new table (khhf.leases): one row per job that must run once across the
nodes of a cluster (campaign rounds, SMS result prompts, report sums, ...),
saying who holds it, until when, and how its last run went. Downgrade
drops it; the jobs then run wherever they are started, as before.
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("node", sa.String(32), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.TIMESTAMP()),
        sa.Column("started_at", sa.TIMESTAMP(), nullable=False),
        sa.Column("finished_at", sa.TIMESTAMP()),
        sa.Column("ok", sa.Boolean()),
        sa.Column("error", sa.Text(), server_default="", nullable=False),
        sa.Column("runs", sa.Integer(), server_default="0", nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_leases")
