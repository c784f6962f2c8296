"""`khhf hotline ...`: operations for the inbound hotline.

    khhf hotline depart EMPLOYEE_NO [--successor EMPLOYEE_NO] [--by USERNAME]
    khhf hotline depart --file departures.csv [--by USERNAME]
    khhf hotline sync-groups

`depart` is for HR batch changes (人事变动): each departing manager's
customers go to the named successor, or are spread evenly over the
county's other active managers when none is named. A file has one line
per departure, `employee_no[,successor_employee_no]`; the whole file is
applied in one unit of work, or nothing is when any line is refused.

`sync-groups` writes every unified number's fallback group (its county's
on-duty desk phones) into Asterisk's AstDB, which the dialplan rings when
the FastAGI service is down; every routed call refreshes its own county.
"""

from __future__ import annotations

import csv
import sys

ASTDB_FAMILY = "khhf-hotline-group"


def register(subparsers) -> None:
    """Add the `hotline` command to khhf's argument parser."""
    p = subparsers.add_parser("hotline", help="the inbound hotline: departures, fallback groups")
    sub = p.add_subparsers(dest="hotline_command", required=True)
    d = sub.add_parser("depart", help="mark managers departed and hand their customers over")
    d.add_argument("employee_no", nargs="?", help="the departing manager's employee number")
    d.add_argument("--successor", help="employee number of the manager who takes over "
                                       "(default: spread over the county's active managers)")
    d.add_argument("--file", help="CSV of departures: employee_no[,successor_employee_no]")
    d.add_argument("--by", help="username recorded in the audit log as having done it")
    d.set_defaults(func=cmd_depart)
    g = sub.add_parser("sync-groups", help="write the fallback groups into Asterisk (AstDB)")
    g.set_defaults(func=cmd_sync_groups)


def _settings(args):
    from khhf import config
    return config.load(args.config)


def read_departures(args) -> list[tuple[str, str | None]]:
    """(employee_no, successor employee_no or None) from the arguments or the file."""
    if args.file:
        with open(args.file, newline="", encoding="utf-8-sig") as fh:
            rows = [[c.strip() for c in row] for row in csv.reader(fh)]
        return [(row[0], (row[1] if len(row) > 1 and row[1] else None))
                for row in rows if row and row[0] and not row[0].startswith("#")]
    if not args.employee_no:
        raise SystemExit("khhf hotline depart: name an employee number, or --file")
    return [(args.employee_no, args.successor)]


def cmd_depart(args) -> int:
    from sqlalchemy import select

    from khhf import audit, db
    from khhf.models import Manager, User
    from khhf.services import ValidationError
    from khhf.services.handover import depart_manager
    departures = read_departures(args)
    settings = _settings(args)
    engine = db.open_database(settings)
    errors, lines = [], []
    try:
        with db.unit_of_work(db.session_factory(engine)) as session:
            by_user = None
            if args.by:
                by_user = session.scalar(select(User).where(User.username == args.by))
                if by_user is None:
                    errors.append(f"there is no user {args.by!r} (--by)")
            ids = dict(session.execute(select(Manager.employee_no, Manager.id)).all())
            for line_no, (employee_no, successor_no) in enumerate(departures, 1):
                where = f"line {line_no}" if args.file else employee_no
                unknown = [n for n in (employee_no, successor_no) if n and n not in ids]
                if unknown:
                    errors.append(f"{where}: no manager with employee number {unknown[0]}")
                    continue
                try:
                    # refuses before changing anything, so a refused line leaves
                    # the session as it was
                    result = depart_manager(session, ids[employee_no],
                                            successor_id=ids.get(successor_no),
                                            by_user=by_user, ip=audit.CLI_ADDRESS)
                except ValidationError as exc:
                    errors.append(f"{where}: {exc}")
                    continue
                lines.append(f"{employee_no}: departed; {result.customer_count} customers and "
                             f"{result.task_count} open tasks handed over")
            if errors:
                raise _Refused()
    except _Refused:
        for error in errors:
            print(f"khhf hotline depart: {error}", file=sys.stderr)
        print("nothing was changed; fix the lines above and run again", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    print("\n".join(lines))
    return 0


class _Refused(Exception):
    """Some departure was refused: roll the whole batch back."""


def sync_groups(settings) -> dict[str, str]:
    """Write each unified number's fallback group into AstDB; return what was written.

    Through the PBX's control socket (root, on the PBX host) rather than the
    AMI: the AMI user has no 'system' write privilege, and should not.
    """
    from khhf import db
    from khhf.services.hotline import county_groups
    from pbxctl.pbx import Pbx
    engine = db.open_database(settings)
    try:
        with db.session_factory(engine)() as session:
            groups = county_groups(session)
    finally:
        engine.dispose()
    pbx = Pbx(settings)
    for number, dial in groups.items():
        if dial:
            pbx.cli(f"database put {ASTDB_FAMILY} {number} {dial}")
        else:
            pbx.cli(f"database del {ASTDB_FAMILY} {number}")
    return groups


def cmd_sync_groups(args) -> int:
    groups = sync_groups(_settings(args))
    for number, dial in groups.items():
        print(f"{number}\t{dial or '(nobody on duty)'}")
    return 0
