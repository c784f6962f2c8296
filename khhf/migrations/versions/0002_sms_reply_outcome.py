"""sms_messages.kind split in two: `kind` says what an outbound message is,
the new `reply_outcome` what an inbound reply did.

Revision ID: 0002
Revises: 0001
Create Date: 2025-01-02

Until now `kind` held both vocabularies, told apart by direction. The
inbound rows' values move to reply_outcome (their kind becomes NULL); each
column gets a CHECK of its vocabulary, and one CHECK keeps each to its
direction. Downgrade moves them back.
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

# the vocabularies as they are at this revision (a revision never imports
# the models: they move on, it must not)
KINDS = ("prompt", "answer", "missed_call")
OUTCOMES = ("filed", "unclear", "ambiguous", "duplicate", "already_filed", "no_prompt",
            "unknown_ref", "refused", "stranger", "error")
CHECKS = {
    "ck_sms_messages_kind": "kind IN ({})".format(", ".join(f"'{k}'" for k in KINDS)),
    "ck_sms_messages_reply_outcome":
        "reply_outcome IN ({})".format(", ".join(f"'{o}'" for o in OUTCOMES)),
    "ck_sms_messages_kind_direction":
        "(direction = 'out' AND reply_outcome IS NULL) OR (direction = 'in' AND kind IS NULL)",
}
# SQLite's batch mode copies the table, and loses what the baseline wrote
# inline without a name (reflected, a CHECK cannot be told from a type's, a
# UNIQUE is only an automatic index): those are restated
BASELINE_CONSTRAINTS = (
    sa.UniqueConstraint("client_ref"),
    sa.CheckConstraint("direction IN ('out', 'in')"),
    sa.CheckConstraint("status IN ('queued', 'sending', 'sent', 'unknown', 'failed', "
                       "'received', 'processed')"),
)


def _batch():
    return op.batch_alter_table("sms_messages", table_args=BASELINE_CONSTRAINTS)


def upgrade() -> None:
    with _batch() as batch:
        batch.add_column(sa.Column("reply_outcome", sa.String(16)))
    op.execute("UPDATE sms_messages SET reply_outcome = kind, kind = NULL "
               "WHERE direction = 'in'")
    with _batch() as batch:
        for name, condition in CHECKS.items():
            batch.create_check_constraint(name, condition)


def downgrade() -> None:
    with _batch() as batch:
        for name in CHECKS:
            batch.drop_constraint(name, type_="check")
    op.execute("UPDATE sms_messages SET kind = reply_outcome WHERE direction = 'in'")
    with _batch() as batch:
        batch.drop_column("reply_outcome")
