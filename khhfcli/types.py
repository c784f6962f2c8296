"""`khhf types ...`: task types and their result codes, for sites that keep
them in a spreadsheet.

    khhf types list                           every type: id, code, name, attempts, codes
    khhf types show NAME_OR_ID                one type as the import's rows (tab-separated)
    khhf types import FILE [--commit] [--by USERNAME]

`show` prints what `import` reads: save it (`khhf types show revisit >
回访.tsv`), change it in Excel or WPS, import it again. `import` reads CSV
or XLSX with one row per result code (khhf.services.task_type_import):
a type named by its code is created or changed to exactly the file's
codes, through the web form's rules, and audited likewise. Without
--commit it checks the file and writes nothing.

Messages are Chinese, from the UI's catalog. Exit status: 0 on success;
1 when the type asked for (or the --by user) does not exist; 2 with one
line for a file that cannot be read; 3 with one line per problem (its row
and what to do) when rows are refused, and then nothing is written.
"""

from __future__ import annotations

import csv
import sys

from khhf.audit import CLI_ADDRESS
from khhf.services import N_
from khhfcli.imports import EXIT_REJECTED, EXIT_UNREADABLE

EXIT_NOT_FOUND = 1


def register(subparsers) -> None:
    """Add the `types` command to khhf's argument parser."""
    p = subparsers.add_parser("types", help="task types and their result codes")
    sub = p.add_subparsers(dest="types_command", required=True)
    sub.add_parser("list", help="every task type").set_defaults(func=cmd_list)
    s = sub.add_parser("show", help="one task type as the import's rows (tab-separated)")
    s.add_argument("type", metavar="NAME_OR_ID", help="the type's code, name or id")
    s.set_defaults(func=cmd_show)
    i = sub.add_parser("import", help="create or change task types from XLSX/CSV, one row "
                                      "per result code (dry run unless --commit)")
    i.add_argument("file", help="the .xlsx or .csv file")
    i.add_argument("--commit", action="store_true", help="write it (default: check only)")
    i.add_argument("--by", help="username recorded in the audit log as having done it")
    i.set_defaults(func=cmd_import)


class _Command:
    """The database and the Chinese catalog of one `khhf types` command."""

    def __init__(self, args, what: str):
        from khhf import config, db
        from khhf.i18n import translator
        self.what, self.zh = what, translator("zh")
        self.engine = db.open_database(config.load(args.config))
        self.sessions = db.session_factory(self.engine)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.engine.dispose()

    def say(self, message: str, **params) -> None:
        print(self.zh(message, params))

    def refuse(self, message: str, **params) -> None:
        print(f"khhf types {self.what}: {self.zh(message, params)}", file=sys.stderr)


def cmd_list(args) -> int:
    from sqlalchemy import select

    from khhf.models import TaskType
    from khhf.services import campaigns, imports
    with _Command(args, "list") as cmd, cmd.sessions() as session:
        labels = {f.name: f.label for f in imports.FIELDS["task_types"]}
        print("\t".join([cmd.zh(N_("Id")), labels["type_code"], labels["type_name"],
                         labels["max_attempts"], labels["code"]]))
        types = session.scalars(select(TaskType).order_by(TaskType.id)).all()
        for t in types:
            print("\t".join([str(t.id), t.code, t.name, str(t.max_attempts),
                             campaigns.describe_codes(t.result_codes)]))
        if types:
            cmd.say(N_("* marks a final code (it finishes the task); the others mean "
                       "\"try again\"."))
        else:
            cmd.say(N_("No task type yet: khhf init adds the standard ones (回访, 营销, "
                       "调查); khhf types import FILE adds your own."))
    return 0


def cmd_show(args) -> int:
    from sqlalchemy import func, select

    from khhf.models import TaskType
    from khhf.services import task_type_import
    wanted = args.type.strip()
    with _Command(args, "show") as cmd, cmd.sessions() as session:
        found = session.get(TaskType, int(wanted)) if wanted.isdigit() else None
        found = found or session.scalar(select(TaskType).where(TaskType.code == wanted.lower()))
        named = [] if found else session.scalars(select(TaskType).where(
            func.lower(TaskType.name) == wanted.lower())).all()
        if len(named) > 1:
            cmd.refuse(N_("Several task types are named %(value)s: give the code of one "
                          "(khhf types list shows them)."), value=wanted)
            return EXIT_NOT_FOUND
        found = found or (named[0] if named else None)
        if found is None:
            cmd.refuse(N_("There is no task type %(value)s: give its code, name or id "
                          "(khhf types list shows them)."), value=wanted)
            return EXIT_NOT_FOUND
        rows = task_type_import.as_rows(found)
    csv.writer(sys.stdout, delimiter="\t", lineterminator="\n").writerows(rows)
    return 0


def cmd_import(args) -> int:
    from sqlalchemy import select

    from khhf import db
    from khhf.models import User
    from khhf.services import imports, task_type_import
    with _Command(args, "import") as cmd, cmd.sessions() as session:
        db.begin_write(session)
        by = None
        if args.by:
            by = session.scalar(select(User).where(User.username == args.by))
            if by is None:
                cmd.refuse(N_("There is no user %(value)s (--by)."), value=args.by)
                return EXIT_NOT_FOUND
        try:
            saved = task_type_import.import_file(session, by, CLI_ADDRESS, args.file)
        except imports.FileError as exc:
            session.rollback()
            print(f"khhf types import: {args.file}: {cmd.zh(exc.message, exc.params)}",
                  file=sys.stderr)
            return EXIT_UNREADABLE
        except task_type_import.Refused as exc:
            session.rollback()
            for p in exc.problems:
                problem = cmd.zh(p.message, p.params)
                if p.type_code:
                    cmd.refuse(N_("Row %(row)s (type %(type)s): %(problem)s"), row=p.row,
                               type=p.type_code, problem=problem)
                else:
                    cmd.refuse(N_("Row %(row)s: %(problem)s"), row=p.row, problem=problem)
            cmd.refuse(N_("%(file)s: nothing written; fix these rows and run it again."),
                       file=args.file)
            return EXIT_REJECTED
        for item in saved:
            t = item.task_type
            cmd.say(N_("%(name)s (%(code)s): new, %(count)s result codes.") if item.created
                    else N_("%(name)s (%(code)s): saved, %(count)s result codes."),
                    name=t.name, code=t.code, count=len(t.result_codes))
        if args.commit:
            session.commit()
            cmd.say(N_("Written."))
        else:
            session.rollback()
            cmd.say(N_("Checked; nothing written (a dry run: add --commit to write it)."))
    return 0
