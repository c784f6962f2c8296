"""`khhf customers export` and `khhf tasks export`: the web's exports
(khhf.services.exports) for scripts, e.g. a nightly copy for a county's CRM.

    khhf customers export 客户.xlsx [--county CODE] [--by USERNAME]
    khhf tasks export CAMPAIGN 任务.csv [--by USERNAME]

The format follows the file's suffix (.xlsx or .csv); headers and labels
are Chinese, numbers whole, so the file is made readable by its owner only
(mode 0600). Each export is in the operation log as done from `cli` (by
--by's user, else the system), with its row count and never a number.
Exit status 0; 1 with one line when refused.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from khhf.audit import CLI_ADDRESS


def register(subparsers) -> None:
    """Add the `customers` command to khhf's argument parser."""
    p = subparsers.add_parser("customers", help="customers: export")
    sub = p.add_subparsers(dest="customers_command", required=True)
    e = sub.add_parser("export", help="the customers, with their manager and latest result, "
                                      "to XLSX or CSV")
    e.add_argument("file", help="the .xlsx or .csv file to write")
    e.add_argument("--county", help="a county's code (default: every county)")
    e.add_argument("--by", help="username recorded in the audit log as having done it")
    e.set_defaults(func=cmd_customers)


def register_tasks_export(sub) -> None:
    """Add `export` to the `tasks` command (khhfcli.tasks)."""
    e = sub.add_parser("export", help="a campaign's tasks, with status and result, "
                                      "to XLSX or CSV")
    e.add_argument("campaign", help="the campaign's id")
    e.add_argument("file", help="the .xlsx or .csv file to write")
    e.add_argument("--by", help="username recorded in the audit log as having done it")
    e.set_defaults(func=cmd_tasks)


def cmd_customers(args) -> int:
    from sqlalchemy import select

    from khhf.models import County
    from khhf.services import exports

    def build(session, zh, local):
        county = None
        if args.county:
            county = session.scalar(select(County).where(County.code == args.county))
            if county is None:
                return f"there is no county with the code {args.county!r} (--county)"
        return ([exports.customer_table(session, county, zh, local)],
                {"kind": "customers", "county": county})
    return _export(args, "customers export", build)


def cmd_tasks(args) -> int:
    from khhf.i18n import TASK_STATUS_LABELS
    from khhf.models import Campaign
    from khhf.services import exports

    def build(session, zh, local):
        campaign = session.get(Campaign, int(args.campaign)) if args.campaign.isdigit() else None
        if campaign is None:
            return f"there is no campaign {args.campaign!r}: give its id"
        table = exports.task_table(session, campaign, zh, local,
                                   lambda code: zh(str(TASK_STATUS_LABELS.get(code, code))))
        return [table], {"kind": "tasks", "campaign": campaign}
    return _export(args, "tasks export", build)


def _export(args, command: str, build) -> int:
    """Write what `build(session, translate, local)` returns ((tables, what),
    or a refusal) to args.file, then its audit entry."""
    from sqlalchemy import select

    from khhf import config, db
    from khhf.i18n import translator
    from khhf.models import User
    from khhf.services import exports

    fmt = Path(args.file).suffix.lower().lstrip(".")
    if fmt not in exports.FORMATS:
        print(f"khhf {command}: {args.file}: name the file .xlsx or .csv (the format "
              "follows the suffix).", file=sys.stderr)
        return 1
    settings = config.load(args.config)
    engine = db.open_database(settings)
    try:
        with db.session_factory(engine)() as reading:
            by = reading.scalar(select(User).where(User.username == args.by)) if args.by else None
            built = f"there is no user {args.by!r} (--by)" if args.by and by is None else \
                build(reading, translator("zh"), exports.local_time(settings))
            if isinstance(built, str):
                print(f"khhf {command}: {built}.", file=sys.stderr)
                return 1
            tables, what = built
            # personal data: readable by its owner only, from the first byte
            fd = os.open(args.file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
            os.close(fd)
            rows = exports.write(fmt, tables, args.file, titles=False)
            with db.unit_of_work(db.session_factory(engine)) as session:
                exports.record(session, by, CLI_ADDRESS, fmt=fmt, rows=rows, **what)
    finally:
        engine.dispose()
    print(f"{args.file}: {rows} rows")
    return 0
