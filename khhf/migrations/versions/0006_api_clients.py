"""The integration API: its clients, the idempotency keys of their writes,
and the webhooks' outbox.

Revision ID: 0006
Revises: 0007
Create Date: 2026-12-07

Three new tables, nothing else changes: api_clients (a system of the
operator's calling /api/v1/ with a bearer token, only its hash kept),
api_idempotency (the first answer to a write sent with a client's key)
and webhook_deliveries (one event for one client, until delivered).
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0007"
branch_labels = None
depends_on = None

# the vocabularies as they are at this revision (a revision never imports the models)
KINDS = ("result.filed", "call.ended", "hotline.missed", "sms.reply")
STATUSES = ("pending", "delivered", "failed")


def _in(column: str, values) -> str:
    return "{} IN ({})".format(column, ", ".join(f"'{v}'" for v in values))


def _id():
    return sa.Column("id", sa.Integer, sa.Identity(), primary_key=True)


def _created(name: str = "created_at"):
    return sa.Column(name, sa.TIMESTAMP, nullable=False,
                     server_default=sa.func.current_timestamp())


def upgrade() -> None:
    op.create_table(
        "api_clients",
        _id(),
        sa.Column("name", sa.String(64), nullable=False, unique=True),
        sa.Column("county_id", sa.Integer, sa.ForeignKey("counties.id"), nullable=False),
        sa.Column("token_id", sa.String(16), nullable=False, unique=True),
        sa.Column("secret_hash", sa.String(64), nullable=False),
        sa.Column("signing_key", sa.String(64), nullable=False),
        sa.Column("operations", sa.Text, nullable=False, server_default=""),
        sa.Column("allowed_addresses", sa.Text, nullable=False, server_default=""),
        sa.Column("webhook_url", sa.String(255), nullable=False, server_default=""),
        sa.Column("rate_per_minute", sa.Integer, nullable=False, server_default="600"),
        _created(),
        sa.Column("created_by", sa.Integer, sa.ForeignKey("users.id")),
        sa.Column("revoked_at", sa.TIMESTAMP),
        sa.CheckConstraint("rate_per_minute > 0"),
    )
    op.create_table(
        "api_idempotency",
        _id(),
        sa.Column("client_id", sa.Integer, sa.ForeignKey("api_clients.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("key", sa.String(128), nullable=False),
        sa.Column("operation", sa.String(32), nullable=False),
        sa.Column("status_code", sa.Integer, nullable=False),
        sa.Column("response", sa.Text, nullable=False),
        _created(),
        sa.UniqueConstraint("client_id", "key"),
    )
    op.create_index("ix_api_idempotency_created", "api_idempotency", ["created_at"])
    op.create_table(
        "webhook_deliveries",
        _id(),
        sa.Column("client_id", sa.Integer, sa.ForeignKey("api_clients.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(24), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False, server_default="pending"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        _created("next_attempt_at"),
        sa.Column("last_error", sa.Text, nullable=False, server_default=""),
        _created(),
        sa.Column("delivered_at", sa.TIMESTAMP),
        sa.UniqueConstraint("client_id", "event_id"),
        sa.CheckConstraint(_in("kind", KINDS)),
        sa.CheckConstraint(_in("status", STATUSES)),
    )
    op.create_index("ix_webhook_deliveries_due", "webhook_deliveries",
                    ["status", "next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_due", "webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_api_idempotency_created", "api_idempotency")
    op.drop_table("api_idempotency")
    op.drop_table("api_clients")
