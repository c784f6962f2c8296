"""`khhf import customers|managers|tasks FILE`: imports for administrators
and scripts, the same checks as the web UI's import page.

    khhf import customers 客户.xlsx --county anji             # dry run: counts
    khhf import customers 客户.xlsx --county anji --commit --rejects 错误.xlsx
    khhf import managers 经理.csv --commit --passwords initial.csv
    khhf import tasks 名单.xlsx --campaign 7 --commit

Exit status: 0 when every row is good (and, with --commit, written);
3 when rows were rejected (with --commit the others are written, in one
transaction); 2 with a one-line error for a file that cannot be read
(not a spreadsheet, unknown encoding, empty, no column for a required field).

Managers get a random initial password each: with --passwords the list
(employee no, user name, password) is written to that file, readable by
its owner only, for the administrator to hand out; without it nobody
knows them and an administrator sets each on the users page.
"""

from __future__ import annotations

import csv
import os
import sys

EXIT_REJECTED = 3
EXIT_UNREADABLE = 2
SHOWN_REJECTS = 20


def register(subparsers) -> None:
    """Add the `import` command to khhf's argument parser."""
    p = subparsers.add_parser("import", help="import customers, managers or tasks from "
                                             "XLSX/CSV (dry run unless --commit)")
    p.add_argument("kind", choices=["customers", "managers", "tasks"])
    p.add_argument("file", help="the .xlsx or .csv file")
    p.add_argument("--county", help="county code for rows without a county column")
    p.add_argument("--campaign", type=int, help="campaign id the tasks belong to")
    p.add_argument("--commit", action="store_true", help="write the good rows (one transaction)")
    p.add_argument("--rejects", metavar="OUT.xlsx", help="write the rejected rows and reasons here")
    p.add_argument("--map", action="append", default=[], metavar="HEADER=FIELD",
                   help="map a column the file names differently, e.g. 联系方式=phone")
    p.add_argument("--passwords", metavar="OUT.csv",
                   help="managers: write the initial passwords here (mode 0600)")
    p.add_argument("--by", help="username recorded in the audit log as having done it")
    p.set_defaults(func=cmd_import)


def cmd_import(args) -> int:
    from sqlalchemy import select

    from khhf import config, db
    from khhf.i18n import translator
    from khhf.models import User
    from khhf.services import imports

    mapping = {}
    for item in args.map:
        header, sep, target = item.partition("=")
        if not sep:
            print(f"khhf import: --map needs HEADER=FIELD, got {item!r}", file=sys.stderr)
            return EXIT_UNREADABLE
        mapping[header.strip()] = target.strip()
    settings = config.load(args.config)
    engine = db.open_database(settings)
    options = imports.Options(county_code=args.county, campaign_id=args.campaign,
                              mapping=mapping)
    zh = translator("zh")
    try:
        with db.session_factory(engine)() as session:
            if args.commit:
                db.begin_write(session)
            by = session.scalar(select(User).where(User.username == args.by)) if args.by else None
            try:
                report = imports.run(session, args.kind, args.file, options,
                                     commit=args.commit, by=by, filename=os.path.basename(args.file))
            except imports.FileError as exc:
                print(f"khhf import: {args.file}: {exc}", file=sys.stderr)
                return EXIT_UNREADABLE
            if args.commit and report.accepted:
                session.commit()
            if report.passwords and args.passwords:
                _write_passwords(args.passwords, report.passwords)
    finally:
        engine.dispose()
    _print(args, report)
    if args.rejects and report.rejects:
        imports.write_rejects(report, args.rejects, zh)
        print(f"rejected rows with their reasons: {args.rejects}")
    return EXIT_REJECTED if report.rejects else 0


def _print(args, report) -> None:
    if not args.commit:
        done = "nothing written (dry run: add --commit)"
    elif report.accepted:
        done = "written"
    else:  # nothing committed (see above): no audit entry for an import of nothing
        done = "nothing written: no good rows"
    print(f"{args.file}: {report.rows} rows, {report.accepted} good, {report.rejected} "
          f"rejected, {report.empty_rows} empty skipped; {done}")
    for reject in report.rejects[:SHOWN_REJECTS]:
        for column, value, message, params in reject.problems:
            print(f"  row {reject.row}, {column} {value!r}: {message % params if params else message}")
    if report.rejected > SHOWN_REJECTS:
        print(f"  ... and {report.rejected - SHOWN_REJECTS} more rejected rows "
              "(--rejects OUT.xlsx lists them all)")


def _write_passwords(path: str, rows) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", newline="", encoding="utf-8-sig") as fh:
        writer = csv.writer(fh)
        writer.writerow(["工号", "用户名", "初始密码"])
        writer.writerows(rows)
    print(f"initial passwords of {len(rows)} managers: {path} (hand them out, then delete it)")
