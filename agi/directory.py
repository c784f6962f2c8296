"""The hotline's routing look-up, answered from memory but for one read.

A RoutingDirectory holds khhf.services.hotline.Directory (every manager
and county) and one connection of its own to the database, used from the
event loop itself: no thread hop, no ORM, no transaction to write. Per
call it reads LOOKUP_SQL, one row: routing_generation's counter, the
unified number's county and the caller's customer. A counter unlike the
directory's means a manager or county changed somewhere (triggers raise
it in the changing transaction, whatever process wrote): the directory is
loaded again before routing. So the very next call after a change follows
it, on both engines, without notifications that could arrive late or be
lost with a connection.

- PostgreSQL: psycopg's AsyncConnection in autocommit (each read sees
  every committed change), statements prepared by psycopg after a few uses,
  every read under READ_TIMEOUT.
- SQLite: the standard module, read-only, in autocommit, on the loop: a
  read of two indexed rows takes microseconds and in WAL mode never waits
  for a writer; its busy timeout is 0, so a locked file fails at once
  instead of stalling the loop.

Anything unexpected (the database away, the triggers missing, a time-out)
raises DirectoryUnavailable: the route then takes the path that reads
everything in a unit of work (hotline.start_call), as before.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from typing import Any

from sqlalchemy.engine import Engine

from khhf import db
from khhf.models import routing_trigger_names
from khhf.services import hotline

log = logging.getLogger(__name__)

# a read that takes longer than this gives up (the route falls back)
READ_TIMEOUT = 0.5
# a directory read while another transaction changed it again: try again
LOAD_ATTEMPTS = 3


class DirectoryUnavailable(Exception):
    """The directory cannot answer this call; the route reads the database."""


class RoutingDirectory:
    """The hotline's look-up for one engine's database (see the module)."""

    def __init__(self, engine: Engine):
        self.dialect = engine.dialect.name
        if self.dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"no routing directory for {self.dialect}")
        self._engine = engine
        self._conn: Any = None
        self._directory: hotline.Directory | None = None
        self._lock = asyncio.Lock()
        p = "?" if self.dialect == "sqlite" else "%s"
        self._lookup_sql = hotline.LOOKUP_SQL.format(p=p)
        self._trigger_sql = ("SELECT name FROM sqlite_master WHERE type = 'trigger'"
                             if self.dialect == "sqlite" else
                             "SELECT tgname FROM pg_trigger WHERE NOT tgisinternal")
        self.loads = 0  # how often the directory was (re)loaded: for tests and the bench

    async def route(self, *, caller: str, unified_number: str, uniqueid: str, now,
                    settings) -> hotline.Routing:
        """The ring order for this call (no row written: hotline.record_call)."""
        number = hotline.caller_number(caller)
        async with self._lock:  # one connection: one statement at a time
            try:
                row = await self._fetch(self._lookup_sql, (unified_number, number))
                for _ in range(LOAD_ATTEMPTS):
                    if not row:
                        raise DirectoryUnavailable("routing_generation has no row")
                    directory = self._directory
                    if directory is not None and directory.generation == row[0][0]:
                        return directory.route(row[0], number=number, uniqueid=uniqueid,
                                               now=now, settings=settings)
                    self._directory = await self._load()
                    if self._directory.generation != row[0][0]:
                        # changed since the look-up: read the customer again
                        row = await self._fetch(self._lookup_sql, (unified_number, number))
            except DirectoryUnavailable:
                raise
            except Exception as exc:  # the database away, a time-out, a broken connection
                await self._drop()
                raise DirectoryUnavailable(f"{exc.__class__.__name__}: {exc}") from exc
        raise DirectoryUnavailable("managers changed during every attempt to load them")

    async def _load(self) -> hotline.Directory:
        """Every manager and county, between two equal readings of the counter."""
        triggers = {row[0] for row in await self._fetch(self._trigger_sql)}
        missing = routing_trigger_names(self.dialect) - triggers
        if missing:
            raise DirectoryUnavailable(
                f"the triggers {', '.join(sorted(missing))} are missing: run `khhf db upgrade`")
        for _ in range(LOAD_ATTEMPTS):
            before = await self._fetch(hotline.GENERATION_SQL)
            managers = await self._fetch(hotline.MANAGERS_SQL)
            counties = await self._fetch(hotline.COUNTIES_SQL)
            after = await self._fetch(hotline.GENERATION_SQL)
            if before and before == after:
                self.loads += 1
                return hotline.Directory.from_rows(before[0][0], managers, counties)
        raise DirectoryUnavailable("managers changed during every attempt to load them")

    async def _fetch(self, sql: str, params: tuple = ()) -> list[tuple]:
        if self.dialect == "sqlite":
            conn = self._conn or self._open_sqlite()
            return conn.execute(sql, params).fetchall()
        async with asyncio.timeout(READ_TIMEOUT):  # in this task: no task of its own to start
            return await self._fetch_pg(sql, params)

    async def _fetch_pg(self, sql: str, params: tuple) -> list[tuple]:
        if self._conn is None:
            import psycopg
            _args, kwargs = self._engine.dialect.create_connect_args(self._engine.url)
            kwargs.setdefault("connect_timeout", db.PG_CONNECT_TIMEOUT_S)
            kwargs.setdefault("application_name", db.application_name())
            self._conn = await psycopg.AsyncConnection.connect(autocommit=True, **kwargs)
        cur = await self._conn.execute(sql, params or None)
        return await cur.fetchall()

    def _open_sqlite(self) -> sqlite3.Connection:
        path = db.sqlite_file(self._engine.url.render_as_string(hide_password=False))
        if path is None:
            raise DirectoryUnavailable("an in-memory SQLite database has no second connection")
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
        conn.execute("PRAGMA query_only=1")
        self._conn = conn
        return conn

    async def _drop(self) -> None:
        """Forget the connection (the next call opens another) and the directory."""
        conn, self._conn, self._directory = self._conn, None, None
        if conn is None:
            return
        try:
            result = conn.close()
            if asyncio.iscoroutine(result):
                await asyncio.wait_for(result, READ_TIMEOUT)
        except Exception:  # closing a broken connection: nothing more to do
            pass

    async def close(self) -> None:
        await self._drop()
