"""Database engine and sessions, for SQLite (default) and PostgreSQL.

The schema's shape is the models' (khhf/models.py), the way a database
gets there the revisions' (khhf/migrations). SQLite is opened in WAL mode
with a busy timeout, since the AMI bridge, the AGI service and the web UI
write from separate processes.
"""

from __future__ import annotations

import collections
import fcntl
import functools
import logging
import os
import sqlite3
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Any

from sqlalchemy import Table, create_engine, event
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from khhf import webhooks
from khhf.config import ConfigError, Settings

SQLITE_BUSY_TIMEOUT_MS = 10_000
# a PostgreSQL server that does not answer: give up connecting after this
# long, so no request, AGI route or health check hangs on it
PG_CONNECT_TIMEOUT_S = 3
WRITE_OPTION = "khhf_write"
# an engine option: its writers go first at SQLite's write lock (UrgentWriters)
URGENT_OPTION = "khhf_urgent"
# at DEBUG, every SQLite write transaction: who took the write lock, how long
# it waited (at the process's gate, then at SQLite's lock) and held it
lock_log = logging.getLogger("khhf.db.lock")
log = logging.getLogger(__name__)


class NoDatabase(ConfigError):
    """KHHF's database is not there to open (no file, no tables, or the
    server refuses it): only `khhf init` creates one, so the message says
    to run it. A ConfigError: the daemons exit 2 (khhf.daemon)."""


class DatabaseUnreachable(ConnectionError):
    """The database server did not answer; trying again later may help (an
    OSError: the daemons exit 1 and systemd restarts them)."""


def open_database(settings: Settings, *, at_head: bool = True, **kwargs) -> Engine:
    """An engine on the database `khhf init` made for `settings`, for every
    command and daemon but `khhf init`. It never creates one (connecting
    to a missing SQLite file would): a missing file, a database without
    KHHF's tables, or a server that refuses the log-in raises NoDatabase,
    a server that does not answer DatabaseUnreachable, each one sentence
    naming the database, the config file and what to do. With at_head (all
    but `khhf db` and the backup) a database not at the newest revision
    raises khhf.migrations.SchemaError: run `khhf db upgrade`."""
    path = sqlite_file(settings.database_url)
    if path is not None and not path.is_file():
        raise NoDatabase(f"there is no database at {path} ({_origin(settings)}): "
                         "run `khhf init` first.")
    engine = make_engine(settings.database_url, **kwargs)
    try:
        present = has_schema(engine)
    except OperationalError as exc:
        engine.dispose()
        raise cannot_connect(exc, engine, settings) from None
    if not present:
        engine.dispose()
        raise NoDatabase(f"the database {engine.url.render_as_string(hide_password=True)} "
                         f"has no tables ({_origin(settings)}): run `khhf init` first.")
    if at_head:
        from khhf import migrations
        try:
            migrations.require_head(engine)
        except migrations.SchemaError:
            engine.dispose()
            raise
    return engine


def cannot_connect(exc: OperationalError, engine: Engine, settings: Settings) -> Exception:
    """The one-sentence error for `engine`'s failed connection: NoDatabase
    when the server (or SQLite) refused it, DatabaseUnreachable when
    nothing answered."""
    reason = str(exc.orig).splitlines()[0].rsplit(" failed: ", 1)[-1].strip()
    path = sqlite_file(settings.database_url)
    if path is not None:  # e.g. a file this user may not write
        return NoDatabase(f"cannot open the database {path} ({reason}): run it as the user "
                          "who owns it.")
    shown = engine.url.render_as_string(hide_password=True)
    if "FATAL:" in reason:  # the server answered: no such database, wrong password
        return NoDatabase(f"the database {shown} refuses the connection "
                          f"({' '.join(reason.replace('FATAL:', '').split())}; "
                          f"{_origin(settings)}): correct database_url, then run `khhf init`.")
    return DatabaseUnreachable(f"cannot reach the database {shown} ({reason}): start it, "
                               "or correct database_url.")


def _origin(settings: Settings) -> str:
    """Where the database's address came from, for the errors above."""
    path = settings.config_path
    if path is not None and not path.exists():
        return f"{path} does not exist"
    return f"database_url of {path or 'the environment'}"


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite `url` (None for another engine or in memory)."""
    if not url.startswith("sqlite") or "///" not in url:
        return None
    path = url.split("///", 1)[1].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def make_engine(url: str, **kwargs) -> Engine:
    """An engine for `url`; SQLite gets WAL, a busy timeout and foreign keys.
    Connecting creates a missing SQLite file: outside `khhf init` and the
    tests, open KHHF's database with open_database."""
    if url.startswith("postgresql://"):
        # psycopg 3 is the driver we ship
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("postgresql"):
        # a restarted server leaves dead connections in the pool: test each
        # before use, so the first request after a restart does not fail
        kwargs.setdefault("pool_pre_ping", True)
        connect_args = kwargs.setdefault("connect_args", {})
        connect_args.setdefault("connect_timeout", PG_CONNECT_TIMEOUT_S)
        # who a backend serves, in pg_stat_activity (and the cluster bench's CPU split)
        connect_args.setdefault("application_name", application_name())
    if url.startswith("sqlite"):
        kwargs.setdefault("connect_args", {}).setdefault("timeout", SQLITE_BUSY_TIMEOUT_MS / 1000)
        path = sqlite_file(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, **kwargs)
    # a process that opens KHHF's database writes webhook events with their causes
    webhooks.install()
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "begin", functools.partial(_sqlite_begin, _gate(url)))
        for name in ("commit", "rollback"):
            event.listen(engine, name, _leave_gate)
        for name in ("checkin", "invalidate"):  # should a transaction end unseen
            event.listen(engine.pool, name, lambda _dbapi, record, *_: _leave_gate(record))
    return engine


def application_name() -> str:
    """This process's name for PostgreSQL's application_name: `khhf ` and
    the module it runs as (`python -m ami_bridge` gives "khhf ami_bridge",
    the bridge's writer "khhf ami_bridge.writer"), else its program's name."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = sys.argv[0] if sys.argv and sys.argv[0] else ""
    name = spec.name.removesuffix(".__main__") if spec is not None and spec.name else \
        Path(program).name if program and not program.startswith("-") else "python"
    return f"khhf {name}"[:63]  # PostgreSQL keeps 63 bytes (NAMEDATALEN - 1)


class WriterGate:
    """The writers of one process take SQLite's write lock in turn, first
    come first served, each woken as the one before ends. Without it they
    all poll the lock with SQLite's busy handler, which sleeps up to 100 ms
    between tries: under a stream of short writes (a county's managers
    dialing, 8 web threads) a writer that has waited long keeps losing to
    newcomers until its busy timeout refuses it ("database is locked").
    Other processes (the bridge, the AGI service) still meet this process's
    writers at SQLite's lock, one at a time."""

    def __init__(self, urgent: UrgentWriters | None = None) -> None:
        # the file's urgent writers, across processes (None: no priority)
        self.urgent = urgent
        self._mutex = threading.Lock()
        self._held = False
        self._queue: collections.deque[threading.Event] = collections.deque()

    def enter(self, timeout: float) -> bool:
        """Wait for this writer's turn, at most `timeout` seconds (False:
        it did not come; go on and let SQLite's busy timeout decide)."""
        with self._mutex:
            if not self._held:
                self._held = True
                return True
            turn = threading.Event()
            self._queue.append(turn)
        if turn.wait(timeout):
            return True
        with self._mutex:
            if turn.is_set():  # handed over as the wait ended
                return True
            self._queue.remove(turn)
            return False

    def leave(self) -> None:
        with self._mutex:
            if self._queue:
                self._queue.popleft().set()  # the next writer's turn: still held
            else:
                self._held = False


# how long other writers hold back for an urgent one; how long a writer
# waits at the lock before it is urgent itself; how often an urgent one tries
URGENT_HOLD_BACK_S = 2.0
URGENT_AFTER_S = 0.5
URGENT_POLL_S = 0.001


class UrgentWriters:
    """Urgent writers go first at SQLite's write lock, across processes.
    Urgent are the AMI bridge's batches of call events from the start
    (every page, the hotline's rows and the health check wait for them),
    and any other writer once it has waited URGENT_AFTER_S at the lock. An
    urgent writer holds a shared flock on a file beside the database
    (`<db>-urgent`) while it waits, and tries the lock every millisecond;
    every other writer looks (a non-blocking exclusive flock) before it
    begins and holds back while one waits, for at most URGENT_HOLD_BACK_S,
    then goes on as before. So an urgent writer waits for the transactions
    already begun (at most one per process, behind its WriterGate), not for
    the stream behind them. Without it, a process's writers were handed the
    lock one to the next by its WriterGate (the web's, 50 managers dialing)
    while the others slept in SQLite's busy handler, up to 100 ms between
    tries: the bridge's batches waited up to 10 s, the AGI's 6 s, and the
    jobs daemon's scheduler was refused after its whole busy timeout."""

    def __init__(self, path: Path):
        self.path = path
        self._look: int | None = None   # this process's descriptor to look with
        self._lock = threading.Lock()
        self._failed = False

    def _open(self) -> int | None:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, 0o660)
        except OSError as exc:
            if not self._failed:  # e.g. a directory this user may not write
                self._failed = True
                log.warning("cannot open %s (%s): writers that waited long get no "
                            "priority at the write lock", self.path, exc)
            return None

    def hold_back(self, timeout: float) -> None:
        """Wait while an urgent writer waits for the lock (at most `timeout`)."""
        with self._lock:
            if self._look is None:
                self._look = self._open()
            look = self._look
        if look is None:
            return
        deadline = time.monotonic() + timeout
        pause = URGENT_POLL_S
        while True:
            try:
                fcntl.flock(look, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:  # one waits (or another writer looks this instant)
                if time.monotonic() >= deadline:
                    return
                time.sleep(pause)
                pause = min(2 * pause, 0.01)
                continue
            fcntl.flock(look, fcntl.LOCK_UN)
            return

    def begin(self, conn, timeout: float, urgent: bool) -> None:
        """BEGIN IMMEDIATE on `conn`, refused as busy after `timeout`. Urgent
        at once, or (not `urgent`) after holding back for those that are
        and waiting URGENT_AFTER_S as SQLite's busy handler waits."""
        raw = conn.connection.driver_connection
        deadline = time.monotonic() + timeout
        if not urgent:
            self.hold_back(URGENT_HOLD_BACK_S)
            if _try_begin(raw, URGENT_AFTER_S):
                return
        flag = self._open()
        try:
            if flag is not None:
                fcntl.flock(flag, fcntl.LOCK_SH)  # waits only while another looks
            while time.monotonic() < deadline:
                if _try_begin(raw, 0):
                    return
                time.sleep(URGENT_POLL_S)
            # the last try, as SQLAlchemy's statement: refused as busy (is_busy)
            raw.execute("PRAGMA busy_timeout=0")
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            finally:
                raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        finally:
            if flag is not None:
                os.close(flag)  # and with it the flock


def _try_begin(raw: sqlite3.Connection, wait: float) -> bool:
    """BEGIN IMMEDIATE on the driver's connection `raw`, waiting at most
    `wait` s in SQLite's busy handler; False if the lock stayed taken."""
    raw.execute(f"PRAGMA busy_timeout={int(wait * 1000)}")
    try:
        raw.execute("BEGIN IMMEDIATE")
        return True
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise
        return False
    finally:
        raw.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")


_GATES: dict[str, WriterGate] = {}
_GATES_LOCK = threading.Lock()
_GATE_KEY = "khhf_writer_gate"


def _gate(url: str) -> WriterGate | None:
    """The process's gate for the SQLite file of `url` (None in memory)."""
    path = sqlite_file(url)
    if path is None:
        return None
    path = path.resolve()
    with _GATES_LOCK:
        if str(path) not in _GATES:
            _GATES[str(path)] = WriterGate(UrgentWriters(path.with_name(path.name + "-urgent")))
        return _GATES[str(path)]


def _sqlite_begin(gate: WriterGate | None, conn):
    # SQLite cannot upgrade a read transaction to a write one once another
    # connection has committed: it fails at once with "database is locked",
    # whatever the busy timeout. A unit of work that will write says so, and
    # takes the write lock up front (BEGIN IMMEDIATE), waiting for its turn:
    # first at this process's gate, then (unless urgent) while an urgent
    # writer waits, then at SQLite's lock (UrgentWriters.begin; so a write
    # waits at most twice the busy timeout, and the hold-back, before it is
    # refused as busy).
    options = conn.get_execution_options()
    immediate = options.get(WRITE_OPTION)
    timed = immediate and lock_log.isEnabledFor(logging.DEBUG)
    began = time.monotonic()
    timeout = SQLITE_BUSY_TIMEOUT_MS / 1000
    if immediate and gate is not None and gate.enter(timeout):
        conn.info[_GATE_KEY] = gate
    entered = time.monotonic()
    try:
        if immediate and gate is not None and gate.urgent is not None:
            gate.urgent.begin(conn, timeout, bool(options.get(URGENT_OPTION)))
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
    except BaseException:
        _leave_gate(conn)
        raise
    if timed:
        conn.info[_TIMING_KEY] = (began, entered, time.monotonic(), _writer_name())


def _leave_gate(conn) -> None:
    """The writing transaction on `conn` (a Connection or a pool record)
    ends: the next writer's turn."""
    try:
        info = conn.info
    except Exception:  # noqa: BLE001 - an invalidated Connection: its pool record released it
        return
    gate = info.pop(_GATE_KEY, None)
    if gate is not None:
        gate.leave()
    timing = info.pop(_TIMING_KEY, None)
    if timing is not None:
        began, entered, locked, name = timing
        lock_log.debug("write lock: gate wait %.3f s, lock wait %.3f s, held %.3f s: %s",
                       entered - began, locked - entered, time.monotonic() - locked, name)


_TIMING_KEY = "khhf_write_timing"
_OWN_FRAMES = ("/khhf/db.py", "/contextlib.py")


def _writer_name() -> str:
    """Who begins a write transaction, for the lock log: the innermost two
    frames of KHHF's code (not this module's, SQLAlchemy's or contextlib's)."""
    frame: FrameType | None = sys._getframe(2)
    names: list[str] = []
    while frame is not None and len(names) < 2:
        path = frame.f_code.co_filename
        if not path.endswith(_OWN_FRAMES) and not any(
                part in path for part in ("/site-packages/", "/lib/python", "<sqlalchemy")):
            names.append(f"{Path(path).parent.name}/{Path(path).name}:{frame.f_code.co_name}")
        frame = frame.f_back
    return " < ".join(names) or "?"


def begin_write(session: Session) -> None:
    """Start `session`'s transaction as a writing one (SQLite: BEGIN
    IMMEDIATE); call before its first statement. A no-op on PostgreSQL."""
    session.connection(execution_options={WRITE_OPTION: True})


# PostgreSQL's SQLSTATE for a lock not granted within lock_timeout
LOCK_NOT_AVAILABLE = "55P03"


def is_busy(error: Exception) -> bool:
    """True if `error` says another writer held a lock for the whole bounded
    wait: SQLite's "database is locked" (the write lock, for the busy
    timeout), PostgreSQL's lock_timeout (e.g. a county's number pool,
    khhf.services.number_pool)."""
    orig = getattr(error, "orig", error)
    if getattr(orig, "sqlstate", None) == LOCK_NOT_AVAILABLE:
        return True
    return isinstance(orig, sqlite3.OperationalError) and "database is locked" in str(orig)


def is_unavailable(error: BaseException) -> bool:
    """True if `error` says the database cannot be used right now (not that
    the statement was wrong): the server is down or the connection broke
    (PostgreSQL), or the write lock stayed taken (SQLite, is_busy). Trying
    the same work again later may succeed."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, (OperationalError, InterfaceError, DisconnectionError))


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
    """True if KHHF's tables are there (connecting creates a missing SQLite file)."""
    from sqlalchemy import inspect
    return inspect(engine).has_table("counties")


def session_factory(engine: Engine, *, writer: bool = False,
                    urgent: bool = False) -> sessionmaker[Session]:
    """Sessions on `engine`. With writer=True every transaction they begin
    is a writing one (SQLite: BEGIN IMMEDIATE), as begin_write makes it: for
    a unit of work that may write anywhere in it, e.g. a web form post.
    With urgent=True their writes go first at SQLite's write lock
    (UrgentWriters): for the AMI bridge's call events only."""
    if writer:
        engine = engine.execution_options(**{WRITE_OPTION: True})
    if urgent:
        engine = engine.execution_options(**{URGENT_OPTION: True})
    return sessionmaker(engine, expire_on_commit=False)


# UPDATE statements by id, built once per (table, columns): see update_rows
_UPDATES: dict[tuple, Any] = {}
# PostgreSQL: from this many rows one UPDATE ... FROM unnest, below it one UPDATE per row
UNNEST_FROM = 8


def update_rows(connection: Connection, table: Table,
                rows: Sequence[tuple[int, Mapping[str, object]]]) -> None:
    """Write each row's changed columns (row id, {column: new value}) in as
    few statements as there are sets of columns changed: a batch of the
    AMI bridge moves hundreds of calls and tasks, and the ORM's flush pays
    its own bookkeeping per row (and on PostgreSQL sends one statement per
    row). PostgreSQL: one `UPDATE ... FROM unnest(arrays)` per set, a short
    text psycopg prepares once whatever the row count (below UNNEST_FROM
    rows an UPDATE by id per row, one round trip); SQLite: the driver's
    executemany of one UPDATE per set, each value through its column's own
    bind processor (as SQLAlchemy would write it).
    Column defaults on update (onupdate) are the caller's to give."""
    groups: dict[tuple[str, ...], list[tuple[int, Mapping[str, object]]]] = {}
    for row_id, values in rows:
        if values:
            groups.setdefault(tuple(sorted(values)), []).append((row_id, values))
    dialect = connection.dialect.name
    for columns, members in groups.items():
        key = (dialect, table.name, columns)
        statement = _UPDATES.get(key)
        if dialect == "postgresql" and len(members) < UNNEST_FROM:
            # a few rows (the bridge's batches in live traffic): UPDATE by
            # id, the driver's executemany in one round trip; planning the
            # join with unnest costs the server more than the rows save
            sql = _UPDATES.get((*key, "by id"))
            if sql is None:
                sql = _UPDATES[(*key, "by id")] = (
                    f"UPDATE {table.name} SET {', '.join(f'{c} = %s' for c in columns)} "
                    "WHERE id = %s")
            connection.exec_driver_sql(sql, [
                (*(values[c] for c in columns), row_id) for row_id, values in members])
        elif dialect == "postgresql":
            if statement is None:
                types = [f"%b::{table.c.id.type.compile(dialect=postgresql.dialect())}[]"] + [
                    f"%b::{table.c[c].type.compile(dialect=postgresql.dialect())}[]"
                    for c in columns]
                statement = _UPDATES[key] = (
                    f"UPDATE {table.name} SET "
                    + ", ".join(f"{c} = v.{c}" for c in columns)
                    + f" FROM unnest({', '.join(types)}) AS v(id, {', '.join(columns)})"
                    f" WHERE {table.name}.id = v.id")
            arrays = [[row_id for row_id, _ in members]] + [
                [values[c] for _, values in members] for c in columns]
            connection.exec_driver_sql(statement, tuple(arrays))
        else:
            if statement is None:
                # the text, and each column's bind processor (SQLite: a
                # datetime's text form), once; then the driver's executemany
                # (SQLAlchemy's own would build a parameter dict per row)
                processors = [table.c[c].type.dialect_impl(connection.dialect)
                              .bind_processor(connection.dialect) for c in columns]
                statement = _UPDATES[key] = (
                    f"UPDATE {table.name} SET {', '.join(f'{c} = ?' for c in columns)} "
                    "WHERE id = ?", processors)
            sql, processors = statement
            connection.exec_driver_sql(sql, [
                (*(v if p is None or v is None else p(v)
                   for p, v in zip(processors, (values[c] for c in columns))), row_id)
                for row_id, values in members])


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
