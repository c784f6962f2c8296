"""calls.recording_status: whether a call's recording is complete, partial
or missing, so a recording cut off by a full disk is never a silent half file.

Revision ID: 0007
Revises: 0002
Create Date: 2026-12-07

The AMI bridge judges it from the file once the call has ended. Rows the
bridge had already finished (recording_sha256 set) are judged here from the
figures it stored: complete when the file's length is the talk time within a
second, else partial. The rest are left NULL for the bridge to judge.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0002"
branch_labels = None
depends_on = None

# the vocabulary as it is at this revision (a revision never imports the models)
STATUSES = ("complete", "partial", "missing")
CHECK_NAME = "ck_calls_recording_status"
CHECK = "recording_status IN ({})".format(", ".join(f"'{s}'" for s in STATUSES))
# SQLite's batch mode copies the table, and loses what the baseline wrote
# inline without a name: those are restated
BASELINE_CONSTRAINTS = (
    sa.UniqueConstraint("uniqueid"),
    sa.CheckConstraint("direction IN ('outbound', 'inbound')"),
    sa.CheckConstraint("state IN ('requested', 'manager_ringing', 'manager_answered', "
                       "'customer_ringing', 'connected', 'ended', 'failed')"),
    sa.CheckConstraint("hangup_by IN ('customer', 'manager', 'system')"),
    sa.CheckConstraint("talk_seconds >= 0"),
    sa.CheckConstraint("manager_device IN ('desk', 'mobile')"),
)


def _batch():
    return op.batch_alter_table("calls", table_args=BASELINE_CONSTRAINTS)


def upgrade() -> None:
    with _batch() as batch:
        batch.add_column(sa.Column("recording_status", sa.String(8)))
        batch.create_check_constraint(CHECK_NAME, CHECK)
    op.execute("UPDATE calls SET recording_status = CASE "
               "WHEN recording_seconds >= COALESCE(talk_seconds, 0) - 1 THEN 'complete' "
               "ELSE 'partial' END "
               "WHERE recording_sha256 IS NOT NULL")


def downgrade() -> None:
    with _batch() as batch:
        batch.drop_constraint(CHECK_NAME, type_="check")
        batch.drop_column("recording_status")
