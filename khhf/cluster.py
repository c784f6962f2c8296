"""Several PBX nodes behind one SIP edge (Kamailio): what they share.

The nodes and the edge share one PostgreSQL (docs/cluster.md). KHHF's own
tables are the models'; Kamailio's (the registrar's `location`, its
`version`) live in their own schema, KAMAILIO_SCHEMA, made from the SQL
Debian ships with Kamailio, so they are Kamailio's to upgrade and never
part of KHHF's schema check.
"""

from __future__ import annotations

import re
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url

from khhf.config import ConfigError, Settings

KAMAILIO_SCHEMA = "kamailio"
# Debian's kamailio-postgres-modules: the tables of each Kamailio module
KAMAILIO_SQL_DIR = Path("/usr/share/kamailio/postgres")
# the modules whose tables the edge needs: `version` (standard), `location` (usrloc)
KAMAILIO_SQL = ("standard-create.sql", "usrloc-create.sql")


def require_postgresql(settings: Settings, what: str = "the cluster") -> None:
    """Refuse a cluster on SQLite, in one sentence."""
    if not settings.database_url.startswith("postgresql"):
        raise ConfigError(f"{what} needs PostgreSQL, which every node and the edge share, but "
                          f"database_url is {settings.database_url.split('://')[0]}: set "
                          "database_url to postgresql://user:password@host/khhf on every "
                          "machine (SQLite stays the one-node default).")


def kamailio_db_url(settings: Settings) -> str:
    """database_url as Kamailio's db_postgres wants it: postgres://user:pw@host:port/db."""
    require_postgresql(settings)
    url = make_url(settings.database_url)
    if url.query:
        raise ConfigError(f"database_url has options ({'&'.join(url.query)}) that Kamailio "
                          "cannot take: give the edge a URL without ?options.")
    auth = f"{url.username}:{url.password}@" if url.password else f"{url.username or ''}@"
    return f"postgres://{auth}{url.host or '127.0.0.1'}:{url.port or 5432}/{url.database}"


def kamailio_tables_sql(sql_dir: Path = KAMAILIO_SQL_DIR) -> list[str]:
    """The statements that make Kamailio's tables, from Debian's files."""
    statements = []
    for name in KAMAILIO_SQL:
        path = sql_dir / name
        try:
            body = path.read_text(encoding="utf-8")
        except OSError:
            raise ConfigError(f"{path} is missing: install Debian's kamailio-postgres-modules "
                              "(scripts/install does).") from None
        body = re.sub(r"--[^\n]*", "", body)
        statements += [s.strip() for s in body.split(";") if s.strip()]
    return statements


def ensure_kamailio_tables(engine: Engine) -> bool:
    """Make schema KAMAILIO_SCHEMA and Kamailio's tables in it unless they
    exist; True when made now. The edge connects with this schema first on
    its search path (pbxctl.edge)."""
    with engine.begin() as conn:
        present = conn.execute(text(
            "SELECT count(*) FROM information_schema.tables "
            "WHERE table_schema = :schema AND table_name IN ('version', 'location')"),
            {"schema": KAMAILIO_SCHEMA}).scalar()
        if present == 2:
            return False
        conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {KAMAILIO_SCHEMA}"))
        conn.execute(text(f"SET LOCAL search_path TO {KAMAILIO_SCHEMA}"))
        for statement in kamailio_tables_sql():
            conn.execute(text(statement))
    return True
