"""The `khhf` command: set-up and operations.

    khhf init                  write the config with fresh secrets, create the database
                               and the first administrator (khhfcli/users.py)
    khhf db upgrade|current|check|schema
                               the database's schema revision (khhfcli/db.py)
    khhf pbx build|up|down|status|reload|sync|phones
                               the Asterisk PBX (khhfcli/pbx.py)
    khhf edge up|down|status|phones
                               the SIP edge (Kamailio) in front of the PBX nodes
                               (khhfcli/edge.py, docs/cluster.md)
    khhf import KIND FILE      customers, managers or tasks from XLSX/CSV (see khhfcli.imports)
    khhf sms inject|outbox     the SMS inbox and outbox (khhfcli/sms.py)
    khhf service install       systemd units for the PBX, AGI, bridge, SMS gateway, jobs and web UI
    khhf tasks distribute ...  preview or commit a campaign's task distribution
    khhf types list|show|import  task types and their result codes (khhfcli/types.py)
    khhf api clients list|add|revoke  integration API clients (khhfcli/api.py)
    khhf numbers list|add|rest|reactivate|retire|caps
                               a county's unified-number pool (khhfcli/numbers.py)
    khhf dnc import|list         the do-not-call register (khhfcli/dnc.py)
    khhf customers|tasks export  customers, or a campaign's tasks, to XLSX/CSV (khhfcli/exports.py)
    khhf recordings purge      list (or, with --commit, delete) recordings past retention
    khhf reports refresh|check the reports' daily sums (khhfcli/reports.py)
    khhf users admin|password  an administrator, or a user's new password (khhfcli/users.py)
    khhf backup create|restore one archive of database, recordings and configuration
                               (khhfcli/backup.py)
    khhf status [--quiet]      health of the daemons, PBX, SMS, jobs, database and disk;
                               exit 1 with what to do when something is wrong (khhfcli/status.py)
"""

from __future__ import annotations

import argparse
import os
import sys

from khhf import config as config_mod
from khhf.config import ConfigError


def cmd_init(args) -> int:
    from sqlalchemy.exc import OperationalError

    from khhf import db, migrations
    # where the state and the database are: the options, else the
    # environment's KHHF_HOME / KHHF_DATABASE_URL, written into the file so
    # that a later command without that environment finds the same database
    values = {"home": args.home or os.environ.get("KHHF_HOME"),
              "database_url": args.database_url or os.environ.get("KHHF_DATABASE_URL")}
    path = args.config or os.environ.get("KHHF_CONFIG") or config_mod.DEFAULT_CONFIG_PATH
    config_mod.write_new(path, **values)
    # the database every other command will use: the file's values with the
    # environment's KHHF_* over them, as `khhf demo run` and the daemons read it
    settings = config_mod.load(path)
    engine = db.make_engine(settings.database_url)
    try:
        where = engine.url.render_as_string(hide_password=True)
        try:
            empty = migrations.state(engine) == "empty"
        except OperationalError as exc:
            raise db.cannot_connect(exc, engine, settings) from None
        if empty:
            db.create_schema(engine)
            print(f"created the database schema (revision {migrations.head()}) in {where}")
        else:
            # an existing database is never made again; an older one is
            # upgraded by `khhf db upgrade`, after a backup, with the daemons stopped
            migrations.require_head(engine)
        from khhf.services import campaigns

        from . import users
        with db.unit_of_work(db.session_factory(engine)) as session:
            if campaigns.ensure_standard_types(session):
                print("created the standard task types 回访, 营销, 调查 with their result codes")
            admin = None if args.no_admin else users.first_admin(session)
    finally:
        engine.dispose()
    print(f"configuration with generated secrets: {path}")
    if isinstance(admin, str):
        print(f"khhf init: {admin}")
    elif admin:
        print(f"first administrator: user name {admin[0]}, password {admin[1]} (shown only "
              "now; `khhf users password admin` makes a new one)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="khhf", description="KHHF (客户回访) operations")
    parser.add_argument("--config", help="config file (default $KHHF_CONFIG or /etc/khhf/khhf.conf)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", help="write the config with fresh secrets and create the database")
    p.add_argument("--home", help="state directory (default /var/lib/khhf)")
    p.add_argument("--database-url", help="e.g. postgresql://user:pw@127.0.0.1/khhf")
    p.add_argument("--no-admin", action="store_true",
                   help="do not create the first administrator (the demo makes its own users)")
    p.set_defaults(func=cmd_init)
    from . import db as cli_db
    cli_db.register(sub)        # khhf db upgrade|current|check|schema
    from . import demo as cli_demo
    from . import hotline as cli_hotline
    from . import imports as cli_imports
    from . import pbx as cli_pbx
    cli_pbx.register(sub)       # khhf pbx build|up|down|status|reload|sync|phones
    from . import edge as cli_edge
    cli_edge.register(sub)      # khhf edge up|down|status|phones
    from . import service as cli_service
    from . import sms as cli_sms
    from . import tasks as cli_tasks
    cli_hotline.register(sub)   # khhf hotline ...
    cli_imports.register(sub)   # khhf import customers|managers|tasks FILE
    cli_sms.register(sub)       # khhf sms inject|outbox|requeue
    cli_tasks.register(sub)     # khhf tasks distribute ...
    from . import types as cli_types
    cli_types.register(sub)     # khhf types list|show|import
    from . import numbers as cli_numbers
    cli_numbers.register(sub)   # khhf numbers list|add|rest|reactivate|retire|caps
    from . import dnc as cli_dnc
    cli_dnc.register(sub)       # khhf dnc import|list
    cli_demo.register(sub)      # khhf demo seed|run
    cli_service.register(sub)   # khhf service install
    from . import recordings as cli_recordings
    cli_recordings.register(sub)  # khhf recordings purge [--commit]
    from . import reports as cli_reports
    cli_reports.register(sub)   # khhf reports refresh|check
    from . import users as cli_users
    cli_users.register(sub)     # khhf users admin|password
    from . import api as cli_api
    cli_api.register(sub)       # khhf api clients list|add|revoke, khhf api deliveries
    from . import backup as cli_backup
    cli_backup.register(sub)    # khhf backup create|verify|restore|list
    from . import exports as cli_exports
    cli_exports.register(sub)   # khhf customers export (khhf tasks export: khhfcli/tasks.py)
    from . import status as cli_status
    cli_status.register(sub)    # khhf status [--quiet]
    return parser


def main(argv=None) -> int:
    from khhf.db import DatabaseUnreachable
    from pbxctl.pbx import PbxError
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DatabaseUnreachable, PbxError) as exc:
        print(f"khhf: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
