"""Versioned schema migrations (Alembic), configured from KHHF's settings.

Which file is the truth about what:
- the models (khhf/models.py) are the truth about the schema's shape: a
  new database is made from them (`create`), `khhf db check` compares a
  live database to them, and schema.sql is generated from them;
- the revisions (versions/) are the truth about how a database gets there:
  0001 is the baseline (the schema before migrations existed), each later
  one a reviewed change that runs on SQLite (batch mode) and PostgreSQL.
tests/test_migrations.py proves that a baseline database upgraded to head
has the models' shape, and keeps its rows and its reports.

No alembic.ini: the configuration is made here, and the revisions run on a
connection opened from the settings' database_url.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, UniqueConstraint, create_engine, inspect
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from khhf.config import ConfigError

SCRIPT_DIR = Path(__file__).resolve().parent
BASELINE = "0001"
VERSION_TABLE = "alembic_version"
# a table every KHHF database has had since the first release
MARKER_TABLE = "counties"


class SchemaError(ConfigError):
    """The database is not where this version of KHHF needs it; the message
    is one sentence saying what to do. A configuration error: a daemon exits
    with khhf.daemon's EXIT_CONFIG, since restarting will not help."""


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPT_DIR))
    cfg.attributes["connection"] = connection
    return cfg


def head() -> str:
    """The newest revision this version of KHHF knows."""
    newest = ScriptDirectory.from_config(_config()).get_current_head()
    if newest is None:  # the package ships its revisions: a broken install
        raise SchemaError("this installation of KHHF has no schema revisions: reinstall it.")
    return newest


def revisions() -> list[str]:
    """Every revision, oldest first."""
    script = ScriptDirectory.from_config(_config())
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def current(engine: Engine) -> str | None:
    """The revision the database is stamped with (None: not stamped)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def state(engine: Engine) -> str:
    """'empty' (no KHHF tables), 'unversioned' (made before migrations
    existed), 'behind', 'head', or 'unknown' (a revision this version does
    not know: made by a newer KHHF)."""
    tables = set(inspect(engine).get_table_names())
    if VERSION_TABLE not in tables or current(engine) is None:
        return "unversioned" if MARKER_TABLE in tables else "empty"
    rev = current(engine)
    if rev == head():
        return "head"
    return "behind" if rev in revisions() else "unknown"


def _where(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=True)


def problem(engine: Engine) -> str | None:
    """None if the database is at head, else one sentence saying what to do
    (what a daemon prints when it refuses to start)."""
    st = state(engine)
    if st == "head":
        return None
    if st == "empty":
        return f"the database {_where(engine)} has no tables: run `khhf init` first."
    if st == "unknown":
        return (f"the database {_where(engine)} is at revision {current(engine)}, which this "
                f"version of KHHF does not know (head {head()}): install the newer KHHF that "
                "made it.")
    at = "made before versioned migrations" if st == "unversioned" \
        else f"at revision {current(engine)}"
    return (f"the database {_where(engine)} is {at}, this version needs revision {head()}: "
            "run `khhf db upgrade`.")


def require_head(engine: Engine) -> None:
    """Raise SchemaError (one sentence) unless the database is at head."""
    message = problem(engine)
    if message:
        raise SchemaError(message)


@contextmanager
def _migrating(engine: Engine) -> Iterator[Connection]:
    """One connection and one transaction for a whole migration: all or
    nothing on both engines (their DDL is transactional). On SQLite foreign
    keys are off meanwhile, since batch mode drops and re-creates tables
    that others refer to; they are checked before the commit."""
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        driver = conn.connection.driver_connection
        if sqlite and driver is not None:  # only outside a transaction does SQLite honour this
            driver.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                yield conn
                if sqlite and conn.exec_driver_sql("PRAGMA foreign_key_check").first():
                    raise SchemaError("the migration would break a foreign key: nothing "
                                      "was changed.")
        finally:
            if sqlite and driver is not None:
                driver.execute("PRAGMA foreign_keys=ON")


def create(engine: Engine) -> None:
    """Make every table of the models on an empty database and stamp it at
    head, in one transaction."""
    from khhf.models import Base
    with _migrating(engine) as conn:
        Base.metadata.create_all(conn)
        command.stamp(_config(conn), "head")


def upgrade(engine: Engine, target: str = "head") -> tuple[str | None, str]:
    """Bring the database to `target` (default head), keeping every row; a
    database made before migrations is adopted first (`adopt`). Returns
    (revision before, revision after)."""
    st = state(engine)
    if st == "empty":
        raise SchemaError(f"the database {_where(engine)} has no tables: run `khhf init`.")
    if st == "unknown":
        raise SchemaError(problem(engine) or "")
    before = current(engine)
    try:
        with _migrating(engine) as conn:
            if st == "unversioned":
                _adopt(conn)
            command.upgrade(_config(conn), target)
    except SQLAlchemyError as exc:
        raise SchemaError(f"upgrading the database failed, nothing was changed: "
                          f"{str(getattr(exc, 'orig', exc)).splitlines()[0]}.") from exc
    after = current(engine)
    if after is None:
        raise SchemaError(f"the database {_where(engine)} has no revision after the upgrade.")
    return before, after


def downgrade(engine: Engine, target: str) -> None:
    """Take the database back to revision `target` (its data moved back)."""
    with _migrating(engine) as conn:
        command.downgrade(_config(conn), target)


def _adopt(conn: Connection) -> None:
    """Stamp a database made before migrations as the baseline, once its
    tables and columns are verified to be the baseline's."""
    want, got = baseline_shape(), _shape(conn)
    missing = sorted(f"{t}.{c}" if c else t for t, c in _diff(want, got))
    extra = sorted(f"{t}.{c}" if c else t for t, c in _diff(got, want))
    if missing or extra:
        said = ([f"missing {', '.join(missing[:5])}"] if missing else []) \
            + ([f"unexpected {', '.join(extra[:5])}"] if extra else [])
        raise SchemaError(
            f"the database has KHHF tables but not the baseline's (revision {BASELINE}): "
            + "; ".join(said)
            + "; restore a backup made by KHHF, or upgrade it by hand to the baseline.")
    command.stamp(_config(conn), BASELINE)


def _shape(conn: Connection) -> dict[str, set[str]]:
    insp = inspect(conn)
    return {t: {c["name"] for c in insp.get_columns(t)}
            for t in insp.get_table_names() if t != VERSION_TABLE}


def _diff(a: dict[str, set[str]], b: dict[str, set[str]]) -> list[tuple[str, str]]:
    out = []
    for table, columns in a.items():
        if table not in b:
            out.append((table, ""))
        else:
            out.extend((table, c) for c in columns - b[table])
    return out


def baseline_shape() -> dict[str, set[str]]:
    """The baseline's tables and their columns, from revision 0001 run on a
    scratch in-memory SQLite database."""
    scratch = create_engine("sqlite://")
    try:
        with _migrating(scratch) as conn:
            command.upgrade(_config(conn), BASELINE)
            return _shape(conn)
    finally:
        scratch.dispose()


def differences(engine: Engine) -> list:
    """How the live database differs from the models (Alembic's
    autogenerate comparison: tables, columns, types, nullability, indexes,
    unique constraints and foreign keys); [] when it matches."""
    from khhf.models import Base
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True})
        diffs = compare_metadata(ctx, Base.metadata)
        if conn.dialect.name == "sqlite":
            diffs = [d for d in diffs if not _sqlite_unreflected(conn, Base.metadata, d)]
        return diffs


def _sqlite_unreflected(conn: Connection, metadata, diff) -> bool:
    """True for a difference that is only SQLite's reflection missing what
    the baseline's DDL wrote inline: a column's UNIQUE (reflected as an
    automatic index, not a constraint) and REFERENCES ... ON DELETE
    (SQLAlchemy reads ON DELETE only from table-level clauses; SQLite's
    own pragma knows it)."""
    if not isinstance(diff, tuple):
        return False
    op, obj = diff[0], diff[1]
    if op == "add_constraint" and isinstance(obj, UniqueConstraint):
        columns = [c.name for c in obj.columns]
        return any(ix["unique"] and ix["column_names"] == columns for ix in
                   inspect(conn).get_indexes(obj.table.name, include_auto_indexes=True))
    if op in ("add_fk", "remove_fk"):
        table, columns = obj.parent.name, [c.name for c in obj.columns]
        model = [fk for fk in metadata.tables[table].foreign_key_constraints
                 if [c.name for c in fk.columns] == columns]
        if len(model) != 1:
            return False
        rows = conn.exec_driver_sql(f"PRAGMA foreign_key_list({table})").all()
        live = {(r[3], r[2], r[4], r[6]) for r in rows if r[1] == 0}
        fk = model[0]
        want = (columns[0], fk.referred_table.name, fk.elements[0].column.name,
                (fk.ondelete or "NO ACTION").upper())
        return len(columns) == 1 and want in live
    return False


def check(engine: Engine) -> str | None:
    """None if the database is at head and matches the models, else one
    sentence saying what is wrong and what to do (`khhf db check`)."""
    message = problem(engine)
    if message:
        return message
    diffs = differences(engine)
    if diffs:
        return (f"the database {_where(engine)} is at head ({head()}) but differs from the "
                f"models in {len(diffs)} place(s), first: {describe(diffs[0])}; it was changed "
                "by hand: restore a backup or undo the change.")
    return None


def describe(diff) -> str:
    """One autogenerate difference in a few words: 'missing index
    calls.ix_calls_linkedid', 'unexpected column customers.wechat'."""
    if isinstance(diff, list):  # a column's modifications come as a list
        diff = diff[0]
    op, *args = diff
    verb, _, what = op.partition("_")
    if verb == "modify":  # (op, schema, table, column, ...)
        return f"changed {what} of {args[1]}.{args[2]}"
    obj = args[-1] if what == "column" else args[0]
    table = getattr(getattr(obj, "table", None), "name", None) or \
        (args[1] if what == "column" else None)
    name = getattr(obj, "name", None) or ", ".join(c.name for c in getattr(obj, "columns", ()))
    where = f"{table}.{name}" if table and table != name else name
    return f"{'missing' if verb == 'add' else 'unexpected'} {what} {where}"


SCHEMA_HEADER = """\
-- KHHF's database schema, as SQLite creates it: GENERATED from the models
-- (khhf/models.py) by `khhf db schema > schema.sql`; do not edit by hand.
-- Change a model, then write a revision (khhf/migrations/versions/) that
-- brings existing databases there; tests/test_migrations.py checks that
-- this file, the models and the upgraded databases agree.
--
-- PostgreSQL differs only in that each `id` is an identity column. All
-- timestamps are UTC, without zone; the UI shows them in the site's zone.
-- Phone numbers are stored normalised (digits only, no country prefix).
"""


def schema_sql() -> str:
    """The models' schema as SQLite DDL, with each table's docstring as its
    comment: what schema.sql holds."""
    import inspect as pyinspect

    from sqlalchemy.dialects import sqlite
    from sqlalchemy.schema import CreateIndex, CreateTable

    from khhf.models import Base, routing_triggers
    dialect = sqlite.dialect()
    classes = {m.class_.__table__.name: m.class_ for m in Base.registry.mappers}
    out = [SCHEMA_HEADER.rstrip()]
    for table in Base.metadata.tables.values():  # in the order models.py declares them
        # the class's own docstring, not one it inherits
        doc = classes[table.name].__dict__.get("__doc__") if table.name in classes else None
        doc = pyinspect.cleandoc(doc) if doc else None
        out.append("")
        out.extend(f"-- {line}".rstrip() for line in (doc or "").splitlines())
        ddl = str(CreateTable(table).compile(dialect=dialect)).strip()
        lines = [line.strip().rstrip(",").strip() for line in ddl.splitlines()]
        body = lines[1:-1]
        out.append(lines[0])
        out.extend(f"    {line}," for line in body[:-1])
        out.append(f"    {body[-1]}")
        out.append(");")
        for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
            out.append(str(CreateIndex(index).compile(dialect=dialect)).strip() + ";")
    out.append("")
    out.append("-- Triggers: every change the hotline routes by raises routing_generation.")
    out.extend(ddl + ";" for ddl in routing_triggers("sqlite"))
    return "\n".join(out) + "\n"
