"""`khhf reports ...`: the daily sums behind the reports (khhf.services.reports).

    khhf reports refresh                      rebuild the days touched since the last refresh
    khhf reports refresh --from 2026-11-01 [--to 2026-11-30]   rebuild those days
    khhf reports check --from DAY [--to DAY]  compare the sums with direct counts

The timed-jobs daemon (`python -m jobs`) runs `refresh` every few minutes;
run it by hand after restoring a backup or changing the time zone (then
with --from the first day of data).
"""

from __future__ import annotations

import datetime as dt
import sys


def register(subparsers) -> None:
    """Add the `reports` command to khhf's argument parser."""
    p = subparsers.add_parser("reports", help="the reports' daily sums: refresh, check")
    sub = p.add_subparsers(dest="reports_command", required=True)
    for name, func, text in (("refresh", cmd_refresh, "rebuild the daily sums"),
                             ("check", cmd_check, "compare the daily sums with direct counts")):
        r = sub.add_parser(name, help=text)
        r.add_argument("--from", dest="first", type=_day, help="first local day, YYYY-MM-DD")
        r.add_argument("--to", dest="last", type=_day, help="last local day (default: today)")
        r.set_defaults(func=func)


def _day(raw: str) -> dt.date:
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise SystemExit(f"khhf reports: “{raw}” is not a day: write it as YYYY-MM-DD.") from None


def _open(args):
    from khhf import config, db
    settings = config.load(args.config)
    return settings, db.open_database(settings)


def _today(settings) -> dt.date:
    return settings.today()


def cmd_refresh(args) -> int:
    from khhf import db
    from khhf.services import reports
    settings, engine = _open(args)
    try:
        with db.unit_of_work(db.session_factory(engine, writer=True)) as session:
            if args.first is None:
                days = reports.refresh_due(session, settings.timezone)
            else:
                last = args.last or _today(settings)
                reports.refresh(session, settings.timezone, args.first, last)
                days = (args.first, last)
    finally:
        engine.dispose()
    print(f"rebuilt {days[0]} to {days[1]}" if days else "no rows yet: nothing to rebuild")
    return 0


def cmd_check(args) -> int:
    """Each day's sums against a fresh computation from the raw rows."""
    from khhf import db
    from khhf.services import reports
    settings, engine = _open(args)
    last = args.last or _today(settings)
    first = args.first or last
    try:
        with db.session_factory(engine)() as session:
            wrong = reports.check(session, settings.timezone, first, last)
    finally:
        engine.dispose()
    for day, name, stored, direct in wrong:
        print(f"{day} {name}: stored {stored}, direct {direct}", file=sys.stderr)
    print(f"{first} to {last}: " + ("the sums equal the direct counts" if not wrong
                                    else f"{len(wrong)} differences"))
    return 1 if wrong else 0
