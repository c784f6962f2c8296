"""`khhf numbers ...`: a county's unified-number pool (统一号码池) from the
command line (khhf.services.number_pool; the admin's pool page does the same).

    khhf numbers list --county CODE
    khhf numbers add NUMBER --county CODE [--daily N] [--hourly N] [--concurrent N]
    khhf numbers rest|reactivate|retire NUMBER
    khhf numbers caps NUMBER [--daily N] [--hourly N] [--concurrent N]

`list` prints each number with its state, caps (0: no cap), today's calls,
the last hour's, the open ones and why it takes no new call now, then any
warning of a number answered much less often than its county. The changes
are audited as done on the command line (--by names the user). Exit status
0 on success, 1 with one line per problem when refused.
"""

from __future__ import annotations

import sys

CAP_OPTIONS = (("--daily", "daily_cap", "outbound calls a local day"),
               ("--hourly", "hourly_cap", "outbound calls in any 60 minutes"),
               ("--concurrent", "concurrent_cap", "outbound calls at once"))
STATES = {"rest": "resting", "reactivate": "active", "retire": "retired"}


def register(subparsers) -> None:
    """Add the `numbers` command to khhf's argument parser."""
    p = subparsers.add_parser("numbers", help="a county's unified-number pool")
    sub = p.add_subparsers(dest="numbers_command", required=True)
    ls = sub.add_parser("list", help="the pool with today's use and warnings")
    ls.add_argument("--county", required=True, help="the county's code")
    ls.set_defaults(func=cmd_list)
    add = sub.add_parser("add", help="add a number to a county's pool")
    add.add_argument("number")
    add.add_argument("--county", required=True, help="the county's code")
    caps = sub.add_parser("caps", help="change a number's caps")
    caps.add_argument("number")
    for parser in (add, caps):
        for option, _, what in CAP_OPTIONS:
            parser.add_argument(option, help=f"cap on {what} (0: no cap; add: default from "
                                             "the settings)")
    add.set_defaults(func=cmd_change)
    caps.set_defaults(func=cmd_change)
    for name, help_ in (("rest", "no new calls for now (the hotline still answers it)"),
                        ("reactivate", "back in use"),
                        ("retire", "no more calls (the hotline still answers it)")):
        s = sub.add_parser(name, help=help_)
        s.add_argument("number")
        s.set_defaults(func=cmd_change)
    for s in sub.choices.values():
        s.add_argument("--by", help="username recorded in the audit log as having done it")


def _open(args):
    from khhf import config, db
    settings = config.load(args.config)
    return settings, db.open_database(settings)


def cmd_list(args) -> int:
    from sqlalchemy import select

    from khhf import db
    from khhf.models import County, utcnow
    from khhf.services import number_pool
    settings, engine = _open(args)
    try:
        with db.session_factory(engine)() as session:
            county = session.scalar(select(County).where(County.code == args.county))
            if county is None:
                print(f"khhf numbers list: there is no county with the code {args.county!r} "
                      "(--county)", file=sys.stderr)
                return 1
            now = utcnow()
            rows = number_pool.pool(session, settings, county, now)
            alerts = number_pool.warnings(session, settings, county, now)
    finally:
        engine.dispose()
    print(format_pool(rows, alerts))
    return 0


def format_pool(rows, alerts) -> str:
    """The pool as a table, then the warnings."""
    lines = [f"{'number':<12} {'primary':<7} {'state':<8} {'daily':>6} {'hourly':>6} "
             f"{'at once':>7} {'today':>6} {'hour':>5} {'open':>5}  takes new calls"]
    for r in rows:
        n = r.number
        lines.append(f"{n.number:<12} {'yes' if n.is_primary else '':<7} {n.state:<8} "
                     f"{n.daily_cap:>6} {n.hourly_cap:>6} {n.concurrent_cap:>7} "
                     f"{r.use.today:>6} {r.use.last_hour:>5} {r.use.open:>5}  "
                     f"{'yes' if r.blocked is None else 'no: ' + r.blocked}")
    for w in alerts:
        lines.append(f"warning: {w.number} answered {w.figures.answered} of {w.figures.calls} "
                     f"calls in {w.days} days ({w.figures.answer_rate:.0%}), the county "
                     f"{w.county_rate:.0%}: rest it (khhf numbers rest {w.number})")
    return "\n".join(lines)


def cmd_change(args) -> int:
    from sqlalchemy import select

    from khhf import audit, db
    from khhf.models import County, User
    from khhf.services import ValidationError, number_pool
    settings, engine = _open(args)
    command = args.numbers_command
    errors: list[str] = []
    done = ""
    try:
        with db.session_factory(engine)() as session:
            db.begin_write(session)
            by = None
            if args.by:
                by = session.scalar(select(User).where(User.username == args.by))
                if by is None:
                    errors.append(f"there is no user {args.by!r} (--by)")
            caps = {cap: getattr(args, option[2:], None) for option, cap, _ in CAP_OPTIONS}
            try:
                if command == "add":
                    county = session.scalar(select(County).where(County.code == args.county))
                    if county is None:
                        errors.append(f"there is no county with the code {args.county!r} "
                                      "(--county)")
                    if not errors:
                        row = number_pool.add_number(session, by, audit.CLI_ADDRESS, settings,
                                                     county, args.number, **caps)
                        done = f"added {row.number} to {county.code}"
                else:
                    row = number_pool.find(session, args.number)
                    if row is None:
                        errors.append(f"{args.number!r} is no county's unified number")
                    elif not errors and command == "caps":
                        number_pool.set_caps(session, by, audit.CLI_ADDRESS, row, **caps)
                        done = (f"{row.number}: daily {row.daily_cap}, hourly {row.hourly_cap}, "
                                f"at once {row.concurrent_cap}")
                    elif not errors:
                        number_pool.set_state(session, by, audit.CLI_ADDRESS, row,
                                              STATES[command])
                        done = f"{row.number} is now {row.state}"
            except ValidationError as exc:
                errors += [p.message % p.params for p in exc.problems]
            if errors:
                session.rollback()
            else:
                session.commit()
    finally:
        engine.dispose()
    for error in errors:
        print(f"khhf numbers {command}: {error}", file=sys.stderr)
    if errors:
        return 1
    print(done)
    return 0
