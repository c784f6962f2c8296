"""unified_numbers grows into a pool (统一号码池): each number gets a state,
daily, hourly and concurrent-call caps, and the time it was last used; the
calls get an index for counting each number's recent outbound calls.

Revision ID: 0003
Revises: 0006
Create Date: 2026-12-07

Existing numbers become active with no caps (0), so a county with one
primary number keeps working exactly as before: outbound calls choose among
the active numbers (khhf.services.number_pool), and one number is the only
choice. The primary flag stays; it now means the county's published number.
Downgrade drops the new columns (the states and caps are lost).
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0006"
branch_labels = None
depends_on = None

# the vocabulary as it is at this revision (a revision never imports the models)
STATES = ("active", "resting", "retired")
CHECKS = {
    "ck_unified_numbers_state": "state IN ({})".format(", ".join(f"'{s}'" for s in STATES)),
    "ck_unified_numbers_caps": "daily_cap >= 0 AND hourly_cap >= 0 AND concurrent_cap >= 0",
}
CAPS = ("daily_cap", "hourly_cap", "concurrent_cap")
# the pool's counts per number, read from the index alone
INDEX = "ix_calls_unified_time"
INDEX_COLUMNS = ["unified_number", "requested_at", "direction", "state"]


def _create_index() -> None:
    op.create_index(INDEX, "calls", INDEX_COLUMNS)


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        # ALTER TABLE ADD COLUMN, not batch mode: a table copy would lose the
        # baseline's inline ON DELETE CASCADE; each CHECK rides on a column
        # (the caps' on the last cap, so it is dropped with it)
        op.execute("ALTER TABLE unified_numbers ADD COLUMN state VARCHAR(8) DEFAULT 'active' "
                   f"NOT NULL CONSTRAINT ck_unified_numbers_state "
                   f"CHECK ({CHECKS['ck_unified_numbers_state']})")
        for cap in CAPS:
            check = (f" CONSTRAINT ck_unified_numbers_caps CHECK "
                     f"({CHECKS['ck_unified_numbers_caps']})" if cap == CAPS[-1] else "")
            op.execute(f"ALTER TABLE unified_numbers ADD COLUMN {cap} INTEGER DEFAULT '0' "
                       f"NOT NULL{check}")
        op.execute("ALTER TABLE unified_numbers ADD COLUMN last_used_at TIMESTAMP")
        _create_index()
        return
    op.add_column("unified_numbers", sa.Column("state", sa.String(8), nullable=False,
                                               server_default="active"))
    for cap in CAPS:
        op.add_column("unified_numbers", sa.Column(cap, sa.Integer(), nullable=False,
                                                   server_default="0"))
    op.add_column("unified_numbers", sa.Column("last_used_at", sa.TIMESTAMP()))
    for name, condition in CHECKS.items():
        op.create_check_constraint(name, "unified_numbers", condition)
    _create_index()


def downgrade() -> None:
    op.drop_index(INDEX, table_name="calls")
    if op.get_bind().dialect.name != "sqlite":
        for name in CHECKS:
            op.drop_constraint(name, "unified_numbers", type_="check")
    # the last cap first: on SQLite the caps' CHECK goes with it
    for column in ("last_used_at", *reversed(CAPS), "state"):
        op.drop_column("unified_numbers", column)
