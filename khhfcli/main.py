"""The `khhf` command: set-up and operations.

    khhf init                  write the config with fresh secrets, create the database
                               and the first administrator (khhfcli/users.py)
    khhf pbx build             build the cached Asterisk root (Debian sid)
    khhf pbx up|down|status    run the PBX instance
    khhf pbx reload            render the desk phones again from the database
    khhf pbx phones            desk-phone SIP credentials, for provisioning
    khhf import KIND FILE      customers, managers or tasks from XLSX/CSV (see khhfcli.imports)
    khhf sms inject|outbox     the SMS inbox and outbox (khhfcli/sms.py)
    khhf service install       systemd units for the PBX, AGI, bridge, SMS gateway, jobs and web UI
    khhf tasks distribute ...  preview or commit a campaign's task distribution
    khhf customers|tasks export  customers, or a campaign's tasks, to XLSX/CSV (khhfcli/exports.py)
    khhf recordings purge      list (or, with --commit, delete) recordings past retention
    khhf reports refresh|check the reports' daily sums (khhfcli/reports.py)
    khhf users admin|password  an administrator, or a user's new password (khhfcli/users.py)
"""

from __future__ import annotations

import argparse
import os
import sys

from khhf import config as config_mod
from khhf.config import ConfigError


def _settings(args) -> config_mod.Settings:
    return config_mod.load(args.config)


def desk_extensions(settings) -> list[str]:
    """Desk extensions of active managers, from the database (none before
    `khhf init`: the PBX runs without one, and never creates it)."""
    from khhf import db
    from pbxctl.pbx import active_desk_extensions
    try:
        engine = db.open_database(settings)
    except db.NoDatabase:
        return []
    try:
        with db.session_factory(engine)() as session:
            return active_desk_extensions(session)
    finally:
        engine.dispose()


def cmd_init(args) -> int:
    from sqlalchemy.exc import OperationalError
    from khhf import db
    values = {}
    if args.home:
        values["home"] = args.home
    if args.database_url:
        values["database_url"] = args.database_url
    path = args.config or os.environ.get("KHHF_CONFIG") or config_mod.DEFAULT_CONFIG_PATH
    config_mod.write_new(path, **values)
    # the database every other command will use: the file's values with the
    # environment's KHHF_* over them, as `khhf demo run` and the daemons read it
    settings = config_mod.load(path)
    engine = db.make_engine(settings.database_url)
    try:
        where = engine.url.render_as_string(hide_password=True)
        try:
            added = db.ensure_schema(engine)
        except OperationalError as exc:
            raise db.cannot_connect(exc, engine, settings) from None
        if added is None:
            print(f"created the database schema in {where}")
        elif added:  # a database made by an older version
            print(f"added the tables {', '.join(added)} to {where}")
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


def cmd_pbx(args) -> int:
    from pbxctl import pbx
    settings = _settings(args)
    if args.action == "build":
        pbx.build_root(settings.asterisk_root, settings.debian_mirror or None)
        print(f"Asterisk root ready at {settings.asterisk_root}")
        return 0
    instance = pbx.Pbx(settings, desk_extensions(settings))
    if args.action == "up":
        pid = instance.up()
        print(f"PBX {settings.pbx_name!r} up (pid {pid}); run directory {instance.run_dir}")
    elif args.action == "down":
        was = instance.down()
        print(f"PBX {settings.pbx_name!r} {'stopped' if was else 'was not running'}")
    elif args.action == "status":
        print(instance.status())
    elif args.action == "reload":
        instance.reload_phones(instance.desk_extensions)
        print(f"desk phones reloaded: {', '.join(instance.desk_extensions) or 'none'}")
    elif args.action == "phones":
        for ext in instance.desk_extensions:
            print(f"{ext}\tsip:{ext}@{settings.sip_host}:{settings.sip_port}\t"
                  f"password {pbx.phone_password(settings, ext)}")
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
    p = sub.add_parser("pbx", help="the Asterisk PBX")
    p.add_argument("action", choices=["build", "up", "down", "status", "reload", "phones"])
    p.set_defaults(func=cmd_pbx)
    from . import demo as cli_demo, hotline as cli_hotline, imports as cli_imports
    from . import service as cli_service, sms as cli_sms, tasks as cli_tasks
    cli_hotline.register(sub)   # khhf hotline ...
    cli_imports.register(sub)   # khhf import customers|managers|tasks FILE
    cli_sms.register(sub)       # khhf sms inject|outbox|requeue
    cli_tasks.register(sub)     # khhf tasks distribute ...
    cli_demo.register(sub)      # khhf demo seed|run
    cli_service.register(sub)   # khhf service install
    from . import recordings as cli_recordings
    cli_recordings.register(sub)  # khhf recordings purge [--commit]
    from . import reports as cli_reports
    cli_reports.register(sub)   # khhf reports refresh|check
    from . import users as cli_users
    cli_users.register(sub)     # khhf users admin|password
    from . import exports as cli_exports
    cli_exports.register(sub)   # khhf customers export (khhf tasks export: khhfcli/tasks.py)
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
