"""`khhf tasks ...`: task distribution from the command line (and
`khhf tasks export`: khhfcli/exports.py).

    khhf tasks distribute CAMPAIGN --mode average|auto [--managers E1,E2,...]
                                   [--commit] [--by USERNAME]

CAMPAIGN is the campaign's id. Without --commit it prints the preview (per
manager: movable tasks now → after) and changes nothing; with --commit it
writes the split and prints the same table. --managers
(employee numbers) chooses the managers of an average distribution
(default: every active manager of the campaign's county). A distribution
of more than distribution.CHUNK_ROWS tasks on PostgreSQL is written in
chunks, one transaction each, after the plan and the audit entry are
committed; if the command stops half-way, the jobs daemon finishes it
(khhf.services.distribution.resume). Exit status 0 on
success, 1 with one line per problem when the request is refused.
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    """Add the `tasks` command to khhf's argument parser."""
    p = subparsers.add_parser("tasks", help="campaign tasks: distribution, export")
    sub = p.add_subparsers(dest="tasks_command", required=True)
    d = sub.add_parser("distribute", help="preview or commit a campaign's task distribution")
    d.add_argument("campaign", help="the campaign's id")
    d.add_argument("--mode", choices=["average", "auto"], required=True,
                   help="average: equal counts over the managers; auto: each customer's "
                        "own manager, the rest to the least loaded")
    d.add_argument("--managers", help="employee numbers, comma-separated (average only)")
    d.add_argument("--commit", action="store_true", help="write it (default: preview only)")
    d.add_argument("--by", help="username recorded in the audit log as having done it")
    d.set_defaults(func=cmd_distribute)
    from .exports import register_tasks_export
    register_tasks_export(sub)  # khhf tasks export CAMPAIGN FILE


def cmd_distribute(args) -> int:
    from sqlalchemy import select

    from khhf import audit, config, db
    from khhf.models import Campaign, Manager, User
    from khhf.services import ValidationError, distribution
    settings = config.load(args.config)
    engine = db.open_database(settings)
    errors = []
    try:
        with db.session_factory(engine)() as session:
            db.begin_write(session)
            campaign = session.get(Campaign, int(args.campaign)) \
                if args.campaign.isdigit() else None
            if campaign is None:
                errors.append(f"there is no campaign {args.campaign!r}: give its id")
            by = None
            if args.by:
                by = session.scalar(select(User).where(User.username == args.by))
                if by is None:
                    errors.append(f"there is no user {args.by!r} (--by)")
            manager_ids = []
            if args.managers:
                numbers = [n.strip() for n in args.managers.split(",") if n.strip()]
                ids = dict(session.execute(select(Manager.employee_no, Manager.id)
                                           .where(Manager.employee_no.in_(numbers))).all())
                errors += [f"no manager with employee number {n} (--managers)"
                           for n in numbers if n not in ids]
                manager_ids = [ids[n] for n in numbers if n in ids]
            if not errors:
                try:
                    if args.commit:
                        result = distribution.commit(session, by, audit.CLI_ADDRESS, campaign,
                                                     args.mode, manager_ids)
                        table = format_plan(result, committed=True)
                        session.commit()
                        if result.run_id is not None:  # a large one: chunk by chunk
                            distribution.finish(session, result.run_id)
                    else:
                        result = distribution.plan(session, campaign, args.mode, manager_ids)
                        table = format_plan(result, committed=False)
                        session.rollback()
                except ValidationError as exc:
                    session.rollback()
                    errors += [p.message % p.params for p in exc.problems]
    finally:
        engine.dispose()
    if errors:
        for error in errors:
            print(f"khhf tasks distribute: {error}", file=sys.stderr)
        return 1
    print(table)
    return 0


def format_plan(result, committed: bool) -> str:
    """The per-manager table of a distribution plan."""
    lines = [f"{'employee_no':<12} {'name':<12} {'now':>8} {'after':>8}"]
    for m in result.managers:
        lines.append(f"{m.employee_no:<12} {m.user.display_name:<12} "
                     f"{result.before.get(m.id, 0):>8} {result.counts.get(m.id, 0):>8}")
    if result.before.get(None) or result.counts.get(None):
        lines.append(f"{'(nobody)':<12} {'':<12} {result.before.get(None, 0):>8} "
                     f"{result.counts.get(None, 0):>8}")
    verb = "moved" if committed else "would move (preview; add --commit to write it)"
    lines.append(f"{result.mode}: {result.moved} of {result.total} tasks {verb}")
    return "\n".join(lines)
