"""pbx_nodes: the PBX nodes of a cluster behind the SIP edge, kept by their bridges.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07

A new table (khhf.services.nodes): each node's AMI bridge keeps its row
fresh (where its command channel listens, its last beat with Asterisk up,
its calls then); click-to-dial picks a live node by load from it, and a
surviving bridge closes a lost node's calls once (lost_at, lost_by). One
node without an edge leaves it empty. Downgrade drops it.
"""

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pbx_nodes",
        sa.Column("name", sa.String(32), primary_key=True),
        sa.Column("bridge_host", sa.String(64), nullable=False),
        sa.Column("bridge_port", sa.Integer(), nullable=False),
        sa.Column("sip_host", sa.String(64), nullable=False),
        sa.Column("sip_port", sa.Integer(), nullable=False),
        sa.Column("joined_at", sa.TIMESTAMP(), server_default=sa.func.current_timestamp(),
                  nullable=False),
        sa.Column("heartbeat_at", sa.TIMESTAMP(), nullable=False),
        sa.Column("live_calls", sa.Integer(), server_default="0", nullable=False),
        sa.Column("accepting", sa.Boolean(), server_default=sa.true(), nullable=False),
        sa.Column("lost_at", sa.TIMESTAMP()),
        sa.Column("lost_by", sa.String(32)),
    )


def downgrade() -> None:
    op.drop_table("pbx_nodes")
