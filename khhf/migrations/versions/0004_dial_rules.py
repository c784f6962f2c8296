"""Dialing rules: the do-not-call register, consent, task kinds.

Revision ID: 0004
Revises: 0008
Create Date: 2026-12-07

- dnc_entries: the do-not-call register (number, date listed, source, how
  it was entered, who added it and why). Customers already flagged do_not_call are entered
  with source 'manual' and the date of the upgrade, so the register and
  the flag agree from the start (listed on the day the customer row last
  changed).
- customers: consent, consent_at, consent_source (marketing consent).
- task_types: kind (revisit, marketing, survey, other; guessed from the
  code and name of existing types) and requires_consent, which a return
  visit may not have.
- result_codes: stops_calls (不再联系: filing it lists the number).

Downgrade drops them (the register's rows go; the customers' flag stays).
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0008"
branch_labels = None
depends_on = None

# the vocabularies as they are at this revision (never imported from the models)
KINDS = ("revisit", "marketing", "survey", "other")
CHANNELS = ("import", "result", "manual")
# SQLite's batch copy loses what the baseline wrote inline without a name
TASK_TYPE_BASELINE = (sa.UniqueConstraint("code"), sa.CheckConstraint("max_attempts > 0"))


def _in(column: str, values) -> str:
    return "{} IN ({})".format(column, ", ".join(f"'{v}'" for v in values))


def upgrade() -> None:
    op.create_table(
        "dnc_entries",
        sa.Column("id", sa.Integer, sa.Identity(), primary_key=True),
        sa.Column("number", sa.String(20), nullable=False, unique=True),
        sa.Column("listed_on", sa.Date, nullable=False),
        sa.Column("source", sa.String(64), nullable=False, server_default=""),
        sa.Column("channel", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False, server_default=""),
        sa.Column("added_by", sa.Integer, sa.ForeignKey("users.id")),
        sa.Column("created_at", sa.TIMESTAMP, nullable=False,
                  server_default=sa.func.current_timestamp()),
        sa.CheckConstraint(_in("channel", CHANNELS), name="ck_dnc_entries_channel"),
    )
    op.add_column("customers", sa.Column("consent", sa.Boolean, nullable=False,
                                         server_default=sa.false()))
    op.add_column("customers", sa.Column("consent_at", sa.TIMESTAMP))
    op.add_column("customers", sa.Column("consent_source", sa.String(64), nullable=False,
                                         server_default=""))
    op.add_column("result_codes", sa.Column("stops_calls", sa.Boolean, nullable=False,
                                            server_default=sa.false()))
    with op.batch_alter_table("task_types", table_args=TASK_TYPE_BASELINE) as batch:
        batch.add_column(sa.Column("kind", sa.String(16), nullable=False,
                                   server_default="revisit"))
        batch.add_column(sa.Column("requires_consent", sa.Boolean, nullable=False,
                                   server_default=sa.false()))
    op.execute("UPDATE task_types SET kind = CASE "
               "WHEN code LIKE '%market%' OR name LIKE '%营销%' THEN 'marketing' "
               "WHEN code LIKE '%survey%' OR name LIKE '%调查%' THEN 'survey' "
               "WHEN code LIKE '%revisit%' OR name LIKE '%回访%' THEN 'revisit' "
               "ELSE 'other' END")
    with op.batch_alter_table("task_types", table_args=TASK_TYPE_BASELINE) as batch:
        batch.create_check_constraint("ck_task_types_kind", _in("kind", KINDS))
        batch.create_check_constraint("ck_task_types_revisit_consent",
                                      "kind != 'revisit' OR NOT requires_consent")
    # listed when the customer row last changed: the best date there is
    day = "DATE(updated_at)" if op.get_bind().dialect.name == "sqlite" \
        else "CAST(updated_at AS DATE)"
    op.execute("INSERT INTO dnc_entries (number, listed_on, channel, reason, created_at) "
               f"SELECT phone, {day}, 'manual', 'do_not_call before the register', updated_at "
               "FROM customers WHERE do_not_call ORDER BY id")


def downgrade() -> None:
    with op.batch_alter_table("task_types", table_args=TASK_TYPE_BASELINE) as batch:
        batch.drop_constraint("ck_task_types_revisit_consent", type_="check")
        batch.drop_constraint("ck_task_types_kind", type_="check")
    with op.batch_alter_table("task_types", table_args=TASK_TYPE_BASELINE) as batch:
        batch.drop_column("requires_consent")
        batch.drop_column("kind")
    # plain columns: dropped in place (SQLite 3.35+), no table copy that
    # could lose the baseline's unnamed constraints and foreign-key actions
    op.drop_column("result_codes", "stops_calls")
    for column in ("consent_source", "consent_at", "consent"):
        op.drop_column("customers", column)
    op.drop_table("dnc_entries")
