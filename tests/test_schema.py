"""The models are the truth about the schema's shape; the revisions must
bring a database made before migrations exactly there.

Two databases are built side by side, one as main made it before
migrations (the baseline DDL) and upgraded through every revision, one from
the models (`khhf init`'s way), and their reflections are compared table by
table, CHECK constraints included: so the comparison uses one dialect's own
view of both, on SQLite and PostgreSQL. (Alembic's own comparison, `khhf db
check`, sees no CHECK constraints, and SQLite's batch mode loses unnamed
ones unless a revision restates them: this test is what catches that.)
"""

import re

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import inspect, select, text

from khhf import db, migrations
from khhf.models import Base, County, UnifiedNumber, User
from tests.test_migrations import make_premigration


def _norm_sql(value) -> str:
    value = "" if value is None else str(value).lower()
    value = re.sub(r"::[a-z ]+(\[\])?", "", value)  # PostgreSQL casts
    return re.sub(r"[\s()]", "", value)


def describe(engine, with_checks: bool) -> dict:
    insp = inspect(engine)
    out = {}
    for table in sorted(insp.get_table_names()):
        pk = insp.get_pk_constraint(table)["constrained_columns"]
        cols = {
            c["name"]: (type(c["type"]).__name__ if engine.dialect.name == "postgresql"
                        else str(c["type"]).split("(")[0],
                        getattr(c["type"], "length", None),
                        # SQLite reports INTEGER PRIMARY KEY as nullable
                        c["nullable"] and c["name"] not in pk,
                        c.get("default") is not None or bool(c.get("identity")))
            for c in insp.get_columns(table)
        }
        if engine.dialect.name == "sqlite":
            # SQLAlchemy reads ON DELETE only from table-level FOREIGN KEY
            # clauses; SQLite's own pragma knows it for inline REFERENCES too
            with engine.connect() as conn:
                rows = conn.exec_driver_sql(f"PRAGMA foreign_key_list({table})").all()
            fks = sorted(((r[3],), r[2], (r[4],), None if r[6] == "NO ACTION" else r[6])
                         for r in rows)
        else:
            fks = sorted((tuple(fk["constrained_columns"]), fk["referred_table"],
                          tuple(fk["referred_columns"]),
                          (fk.get("options") or {}).get("ondelete", "").upper() or None)
                         for fk in insp.get_foreign_keys(table))
        kw = {"include_auto_indexes": True} if engine.dialect.name == "sqlite" else {}
        all_indexes = insp.get_indexes(table, **kw)
        # a UNIQUE written inline or as a table constraint is the same rule;
        # SQLite reflects the former only as an automatic index
        uniques = sorted({tuple(u["column_names"]) for u in insp.get_unique_constraints(table)}
                         | {tuple(ix["column_names"]) for ix in all_indexes
                            if ix["name"].startswith("sqlite_autoindex")})
        indexes = sorted(
            (ix["name"], tuple(ix["column_names"]), bool(ix["unique"]),
             _norm_sql((ix.get("dialect_options") or {}).get(f"{engine.dialect.name}_where")))
            for ix in all_indexes if not ix["name"].startswith("sqlite_autoindex"))
        item = {"columns": cols, "pk": pk,
                "fks": fks, "uniques": uniques, "indexes": indexes}
        if with_checks:
            item["checks"] = sorted(_norm_sql(c["sqltext"]) for c in insp.get_check_constraints(table))
        out[table] = item
    return out


def _compare(make_engine):
    upgraded, from_models = make_engine("a"), make_engine("b")
    make_premigration(upgraded)
    migrations.upgrade(upgraded)
    db.create_schema(from_models)
    want, got = describe(from_models, True), describe(upgraded, True)
    assert sorted(want) == sorted(got), "tables differ"
    assert len(want) == len(Base.metadata.tables) + 1  # and alembic_version
    for table in want:
        for part in want[table]:
            assert got[table][part] == want[table][part], \
                f"{table}.{part}: the upgraded database differs from the models"
    return upgraded


def _round_trip(engine):
    factory = db.session_factory(engine)
    with db.unit_of_work(factory) as session:
        county = County(code="demo", name="示范县",
                        unified_numbers=[UnifiedNumber(number="13900000000", is_primary=True)])
        session.add(county)
        session.flush()
        session.add(User(username="admin", password_hash="x", display_name="管理员", role="admin"))
    with factory() as session:
        county = session.scalars(select(County)).one()
        assert county.primary_number == "13900000000"
    # the constraints hold: an unified number must have 11 digits
    with pytest.raises(sa_exc.IntegrityError):
        with db.unit_of_work(factory) as session:
            session.add(UnifiedNumber(county_id=county.id, number="12345"))
    # and nothing was half-written
    with factory() as session:
        assert session.scalar(select(text("count(*)")).select_from(UnifiedNumber)) == 1


def test_the_revisions_reach_the_models_sqlite(tmp_path):
    engine = _compare(lambda name: db.make_engine(f"sqlite:///{tmp_path / name}.db"))
    _round_trip(engine)
    with engine.connect() as conn:
        assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"


def test_the_revisions_reach_the_models_postgresql(pg_database):
    engine = _compare(pg_database)
    _round_trip(engine)


def test_schema_creation_is_all_or_nothing(tmp_path, monkeypatch):
    """The tables and the stamp go in one transaction: a failure after the
    tables were made leaves no table behind."""
    from alembic import command
    engine = db.make_engine(f"sqlite:///{tmp_path / 'x.db'}")

    def broken_stamp(*args, **kwargs):
        raise RuntimeError("stamping failed")
    monkeypatch.setattr(command, "stamp", broken_stamp)
    with pytest.raises(RuntimeError, match="stamping failed"):
        db.create_schema(engine)
    assert inspect(engine).get_table_names() == []


def _flags_left_out_read_as_the_models_default(engine):
    """Every column default the models give the database, for a row whose
    insert leaves the column out (the import's bulk insert does): a flag's
    default must read back as the model's own (a text 'false' on SQLite
    read as True, so every imported customer was do-not-call)."""
    from sqlalchemy import Column, Integer, MetaData, Table
    checked = 0
    for table in Base.metadata.sorted_tables:
        for column in table.columns:
            if column.server_default is None or column.default is None \
                    or not isinstance(column.default.arg, bool):
                continue
            probe = Table(f"probe_{table.name}_{column.name}", MetaData(),
                          Column("id", Integer, primary_key=True), column._copy())
            probe.create(engine)
            with engine.begin() as conn:
                # in SQL: Core would send the model's Python default itself
                conn.exec_driver_sql(f"INSERT INTO {probe.name} (id) VALUES (1)")
                value = conn.execute(select(probe.c[column.name])).scalar_one()
            assert value is column.default.arg, (table.name, column.name, value)
            checked += 1
    assert checked >= 6


def test_flag_defaults_read_back_sqlite(tmp_path):
    _flags_left_out_read_as_the_models_default(db.make_engine(f"sqlite:///{tmp_path / 'f.db'}"))


def test_flag_defaults_read_back_postgresql(pg_database):
    _flags_left_out_read_as_the_models_default(pg_database("flags"))
