"""distribution_runs: a large distribution written in chunks, resumable.

Revision ID: 0012
Revises: 0005
Create Date: 2026-12-07

A new table (khhf.services.distribution): a distribution of more tasks than
one transaction should hold keeps its moves here and writes them in
chunks, recording its progress with each; at most one unfinished run per
campaign. Downgrade drops it (an unfinished run's remaining moves with it).
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "distribution_runs",
        sa.Column("id", sa.Integer(), sa.Identity(), primary_key=True),
        sa.Column("campaign_id", sa.Integer(),
                  sa.ForeignKey("campaigns.id", ondelete="CASCADE"), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("applied", sa.Integer(), server_default="0", nullable=False),
        sa.Column("moved", sa.Integer(), server_default="0", nullable=False),
        sa.Column("moves", sa.LargeBinary()),
        sa.Column("created_by", sa.Integer(), sa.ForeignKey("users.id")),
        sa.Column("created_at", sa.TIMESTAMP(), server_default=sa.func.current_timestamp(),
                  nullable=False),
        sa.Column("updated_at", sa.TIMESTAMP(), server_default=sa.func.current_timestamp(),
                  nullable=False),
        sa.Column("finished_at", sa.TIMESTAMP()),
        sa.CheckConstraint("applied >= 0 AND applied <= total"),
    )
    op.create_index("ux_distribution_runs_unfinished", "distribution_runs", ["campaign_id"],
                    unique=True, sqlite_where=sa.text("finished_at IS NULL"),
                    postgresql_where=sa.text("finished_at IS NULL"))


def downgrade() -> None:
    op.drop_index("ux_distribution_runs_unfinished", table_name="distribution_runs")
    op.drop_table("distribution_runs")
