"""calls.sip_code: the customer leg's final SIP response (503, 408, 486...),
so a call the carrier trunk failed says how (outcomes carrier_rejected and
carrier_unreachable, khhf.calls.facts.carrier_outcome).

Revision ID: 0008
Revises: 0003
Create Date: 2026-12-07

A nullable column, added in place on both engines (no table copy). Calls
made before it keep their row: their SIP response was never stored.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("calls", sa.Column("sip_code", sa.Integer()))


def downgrade() -> None:
    op.drop_column("calls", "sip_code")
