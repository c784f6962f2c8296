"""routing_generation: one counter row that triggers on managers and
counties raise in the writing transaction, so the AGI service may keep
what the hotline routes by in memory and know, per call, when it changed.

Revision ID: 0010
Revises: 0012
Create Date: 2026-12-07

A new table and triggers only; no table is copied. The trigger DDL is a
frozen copy of khhf.models.routing_triggers at this revision.
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0014"
branch_labels = None
depends_on = None

COLUMNS = {
    "managers": ("county_id", "desk_extension", "mobile", "status", "on_duty"),
    "counties": ("fallback_strategy",),
}
BUMP = "UPDATE routing_generation SET generation = generation + 1"


def _triggers(dialect: str) -> list[tuple[str, str, str]]:
    """(name, table, DDL) of every trigger."""
    out = []
    for table, columns in COLUMNS.items():
        if dialect == "postgresql":
            out.append((f"tr_{table}_routing", table,
                        f"CREATE TRIGGER tr_{table}_routing AFTER INSERT OR DELETE OR UPDATE OF "
                        f"{', '.join(columns)} ON {table} FOR EACH STATEMENT "
                        "EXECUTE FUNCTION khhf_routing_changed()"))
            continue
        for name, when in (("ins", "INSERT"), ("del", "DELETE"),
                           ("upd", f"UPDATE OF {', '.join(columns)}")):
            out.append((f"tr_{table}_routing_{name}", table,
                        f"CREATE TRIGGER tr_{table}_routing_{name} AFTER {when} ON {table} "
                        f"BEGIN {BUMP}; END"))
    return out


def upgrade() -> None:
    op.create_table(
        "routing_generation",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("generation", sa.Integer(), server_default="0", nullable=False),
        sa.CheckConstraint("id = 1"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.execute("INSERT INTO routing_generation (id, generation) VALUES (1, 0)")
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute("CREATE OR REPLACE FUNCTION khhf_routing_changed() RETURNS trigger "
                   f"LANGUAGE plpgsql AS $$ BEGIN {BUMP}; RETURN NULL; END $$")
    for _name, _table, ddl in _triggers(dialect):
        op.execute(ddl)


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name, table, _ddl in _triggers(dialect):
        op.execute(f"DROP TRIGGER {name} ON {table}" if dialect == "postgresql"
                   else f"DROP TRIGGER {name}")
    if dialect == "postgresql":
        op.execute("DROP FUNCTION khhf_routing_changed()")
    op.drop_table("routing_generation")
