"""Alembic's environment for KHHF: no alembic.ini, no URL of its own.

khhf.migrations hands over an open connection (made from the settings'
database_url) in config.attributes; the revisions run in its transaction.
"""

from alembic import context

from khhf.models import Base

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most of a table: batch mode copies it instead
    render_as_batch=connection.dialect.name == "sqlite",
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
