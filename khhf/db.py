"""Database engine and sessions, for SQLite (default) and PostgreSQL.

The schema's shape is the models' (khhf/models.py), the way a database
gets there the revisions' (khhf/migrations). SQLite is opened in WAL mode
with a busy timeout, since the AMI bridge, the AGI service and the web UI
write from separate processes.
"""

from __future__ import annotations

import sqlite3
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 10_000
WRITE_OPTION = "khhf_write"


def make_engine(url: str, **kwargs) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and foreign keys."""
    if url.startswith("postgresql://"):
        # psycopg 3 is the driver we ship
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        path = url.split("///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", _sqlite_begin)
    return engine


def _sqlite_begin(conn):
    # SQLite cannot upgrade a read transaction to a write one once another
    # connection has committed: it fails at once with "database is locked",
    # whatever the busy timeout. A unit of work that will write says so, and
    # takes the write lock up front (BEGIN IMMEDIATE), waiting for its turn.
    immediate = conn.get_execution_options().get(WRITE_OPTION)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


def begin_write(session: Session) -> None:
    """Start `session`'s transaction as a writing one (SQLite: BEGIN
    IMMEDIATE); call before its first statement. A no-op on PostgreSQL."""
    session.connection(execution_options={WRITE_OPTION: True})


def is_busy(error: Exception) -> bool:
    """True if `error` is SQLite's "database is locked": another connection
    held the write lock for the whole busy timeout."""
    orig = getattr(error, "orig", error)
    return isinstance(orig, sqlite3.OperationalError) and "database is locked" in str(orig)


def _sqlite_pragmas(dbapi_conn, _record):
    # transactions are begun by _sqlite_begin, not by the driver
    dbapi_conn.isolation_level = None
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.close()


def create_schema(engine: Engine) -> None:
    """Make every table of the models on an empty database, stamped at the
    newest revision, in one transaction (all or nothing: both SQLite, whose
    transactions _sqlite_begin drives, and PostgreSQL roll DDL back)."""
    from khhf import migrations
    migrations.create(engine)


def has_schema(engine: Engine) -> bool:
    from sqlalchemy import inspect
    return inspect(engine).has_table("counties")


def session_factory(engine: Engine, *, writer: bool = False) -> sessionmaker[Session]:
    """Sessions on `engine`. With writer=True every transaction they begin
    is a writing one (SQLite: BEGIN IMMEDIATE), as begin_write makes it: for
    a unit of work that may write anywhere in it, e.g. a web form post."""
    if writer:
        engine = engine.execution_options(**{WRITE_OPTION: True})
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def unit_of_work(factory: sessionmaker[Session]):
    """One unit of work that writes: commit on success, roll back on any error."""
    session = factory()
    begin_write(session)
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()
