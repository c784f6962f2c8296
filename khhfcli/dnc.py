"""`khhf dnc ...`: the do-not-call register (免打扰名单), for lists that
arrive as files (complaints, the carrier's register, an earlier system).

    khhf dnc import FILE [--commit] [--by USERNAME]   add a file's numbers
    khhf dnc list [--search DIGITS]                   the register, newest first

`import` reads CSV or XLSX with a column 号码 (required) and optional
登记日期, 来源 and 原因 (khhf.services.dnc.import_file). It is all or
nothing: one bad row and nothing is written; numbers already on the
register are left as they are. Without --commit it checks the file and
writes nothing. Every import is audited, naming the --by user.

Messages are Chinese, from the UI's catalog. Exit status: 0 on success;
1 when the --by user does not exist; 2 with one line for a file that
cannot be read; 3 with one line per problem (its row and what to do).
"""

from __future__ import annotations

import sys

from khhf.audit import CLI_ADDRESS
from khhf.services import N_
from khhfcli.imports import EXIT_REJECTED, EXIT_UNREADABLE
from khhfcli.types import EXIT_NOT_FOUND, _Command


def register(subparsers) -> None:
    """Add the `dnc` command to khhf's argument parser."""
    p = subparsers.add_parser("dnc", help="the do-not-call register: import, list")
    sub = p.add_subparsers(dest="dnc_command", required=True)
    i = sub.add_parser("import", help="add the numbers of an XLSX/CSV file (dry run unless "
                                      "--commit; all or nothing)")
    i.add_argument("file", help="the .xlsx or .csv file")
    i.add_argument("--commit", action="store_true", help="write it (default: check only)")
    i.add_argument("--by", help="username recorded as having added them")
    i.set_defaults(func=cmd_import)
    s = sub.add_parser("list", help="the register, newest first (numbers masked)")
    s.add_argument("--search", default="", help="only numbers containing these digits")
    s.add_argument("--limit", type=int, default=100)
    s.set_defaults(func=cmd_list)


class _Dnc(_Command):
    def refuse(self, message: str, **params) -> None:
        print(f"khhf dnc {self.what}: {self.zh(message, params)}", file=sys.stderr)


def cmd_import(args) -> int:
    from sqlalchemy import select

    from khhf import db
    from khhf.models import User
    from khhf.services import dnc, imports
    with _Dnc(args, "import") as cmd, cmd.sessions() as session:
        db.begin_write(session)
        by = None
        if args.by:
            by = session.scalar(select(User).where(User.username == args.by))
            if by is None:
                cmd.refuse(N_("There is no user %(value)s (--by)."), value=args.by)
                return EXIT_NOT_FOUND
        try:
            result = dnc.import_file(session, by, CLI_ADDRESS, args.file)
        except imports.FileError as exc:
            session.rollback()
            print(f"khhf dnc import: {args.file}: {cmd.zh(exc.message, exc.params)}",
                  file=sys.stderr)
            return EXIT_UNREADABLE
        except dnc.Refused as exc:
            session.rollback()
            for p in exc.problems:
                cmd.refuse(N_("Row %(row)s: %(problem)s"), row=p.row,
                           problem=cmd.zh(p.message, p.params))
            cmd.refuse(N_("%(file)s: nothing written; fix these rows and run it again."),
                       file=args.file)
            return EXIT_REJECTED
        cmd.say(N_("%(added)s numbers to add to the do-not-call list, %(already)s on it "
                   "already."), added=result.added, already=result.already)
        if args.commit:
            session.commit()
            cmd.say(N_("Written."))
        else:
            session.rollback()
            cmd.say(N_("Checked; nothing written (a dry run: add --commit to write it)."))
    return 0


def cmd_list(args) -> int:
    from khhf.i18n import DNC_CHANNEL_LABELS, label
    from khhf.phones import mask_phone
    from khhf.services import dnc, imports
    with _Dnc(args, "list") as cmd, cmd.sessions() as session:
        labels = {f.name: f.label for f in imports.FIELDS[dnc.KIND]}
        print("\t".join([labels["number"], labels["listed_on"], labels["source"],
                         labels["reason"], cmd.zh(N_("Entered by"))]))
        for e in dnc.page(session, args.search, size=args.limit):
            print("\t".join([mask_phone(e.number), e.listed_on.isoformat(), e.source,
                             e.reason, label(DNC_CHANNEL_LABELS, e.channel)]))
    return 0
