"""`khhf db ...`: the database's schema revision (khhf.migrations).

    khhf db upgrade     bring the database to the newest revision, keeping
                        every row (a database made before migrations existed
                        is first verified and stamped as the baseline, 0001)
    khhf db current     print the database's revision, and the newest one
    khhf db check       exit 0 only if the database is at the newest revision
                        and matches the models; else 1, with one sentence
    khhf db schema      print the models' schema as SQL (schema.sql is this)

Stop the daemons before `khhf db upgrade` and take a backup (`khhf backup
create`); they refuse to start on a database that is not at the newest
revision.
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    """Add the `db` command to khhf's argument parser."""
    p = subparsers.add_parser("db", help="the database's schema revision: upgrade, current, "
                                         "check, schema")
    sub = p.add_subparsers(dest="db_command", required=True)
    for name, func, text in (
            ("upgrade", cmd_upgrade, "bring the database to the newest revision"),
            ("current", cmd_current, "print the database's revision"),
            ("check", cmd_check, "exit 0 only at the newest revision and matching the models"),
            ("schema", cmd_schema, "print the models' schema as SQL (schema.sql)")):
        sub.add_parser(name, help=text).set_defaults(func=func)


def _engine(args):
    from khhf import config, db
    # at any revision: moving it is what this command is for
    return db.open_database(config.load(args.config), at_head=False)


def cmd_upgrade(args) -> int:
    from khhf import migrations
    engine = _engine(args)
    try:
        adopting = migrations.state(engine) == "unversioned"
        before, after = migrations.upgrade(engine)
    finally:
        engine.dispose()
    if adopting:
        print(f"khhf db: a database made before versioned migrations: verified and stamped "
              f"as the baseline {migrations.BASELINE}")
        before = migrations.BASELINE
    if before == after:
        print(f"khhf db: already at the newest revision, {after}")
    else:
        print(f"khhf db: upgraded from revision {before} to {after}")
    return 0


def cmd_current(args) -> int:
    from khhf import migrations
    engine = _engine(args)
    try:
        state, rev = migrations.state(engine), migrations.current(engine)
    finally:
        engine.dispose()
    shown = {"empty": "none (no tables)",
             "unversioned": "none (made before versioned migrations)"}.get(state, rev)
    print(f"revision {shown}; newest {migrations.head()}")
    return 0


def cmd_check(args) -> int:
    from khhf import migrations
    engine = _engine(args)
    try:
        problem = migrations.check(engine)
    finally:
        engine.dispose()
    if problem:
        print(f"khhf db check: {problem}", file=sys.stderr)
        return 1
    print(f"khhf db check: at the newest revision ({migrations.head()}) and matching the models")
    return 0


def cmd_schema(args) -> int:
    from khhf import migrations
    sys.stdout.write(migrations.schema_sql())
    return 0
