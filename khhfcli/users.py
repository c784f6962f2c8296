"""`khhf users ...`: administrators and passwords from the command line,
for the machine's root when nobody can log in to the web UI.

    khhf users admin [USERNAME] [--name DISPLAY_NAME]
    khhf users password USERNAME

`admin` creates an administrator (default user name `admin`) with a fresh
random password; `password` gives an existing user a fresh random
password and ends their sessions on every device. Either prints the
password once, on standard output, and nowhere else (the audit log says
what was done, never the password). `khhf init` creates the first
administrator the same way when the database has none.

Exit status 0 on success; 1 with one line per problem when refused.
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    """Add the `users` command to khhf's argument parser."""
    p = subparsers.add_parser("users", help="administrators and passwords")
    sub = p.add_subparsers(dest="users_command", required=True)
    a = sub.add_parser("admin", help="create an administrator with a random password")
    a.add_argument("username", nargs="?", default="admin")
    a.add_argument("--name", default="管理员", help="display name (default 管理员)")
    a.set_defaults(func=cmd_admin)
    w = sub.add_parser("password", help="give a user a new random password")
    w.add_argument("username")
    w.set_defaults(func=cmd_password)


def first_admin(session) -> tuple[str, str] | str | None:
    """When the database has no administrator at all: create user `admin`
    with a random password and return (username, password); or, if that
    user name is taken by another role, return what to do instead. None
    when an administrator exists."""
    from sqlalchemy import exists, select

    from khhf.models import User
    if session.scalar(select(exists().where(User.role == "admin"))):
        return None
    if session.scalar(select(exists().where(User.username == "admin"))):
        return ("there is no administrator, and the user name admin is taken: "
                "run `khhf users admin NAME` with another name")
    return _create_admin(session, "admin", "管理员")


def _create_admin(session, username: str, display_name: str) -> tuple[str, str]:
    from khhf.audit import CLI_ADDRESS
    from khhf.services import accounts
    password = accounts.generate_password()
    user = accounts.create_user(session, None, CLI_ADDRESS, username=username,
                                display_name=display_name, password=password, role="admin",
                                county_id=None)
    return user.username, password


def cmd_admin(args) -> int:
    return _run(args, "admin", lambda s: _create_admin(s, args.username, args.name),
                "administrator {0} created; password (shown only now): {1}")


def cmd_password(args) -> int:
    def reset(session):
        from sqlalchemy import select

        from khhf.audit import CLI_ADDRESS
        from khhf.models import User
        from khhf.services import accounts
        user = session.scalar(select(User).where(User.username == args.username.strip()))
        if user is None:
            return None
        password = accounts.generate_password()
        accounts.set_password(session, None, CLI_ADDRESS, user, password)
        return user.username, password
    return _run(args, "password", reset,
                "new password of {0} (shown only now; their sessions have ended): {1}")


def _run(args, what, action, done) -> int:
    """`action(session)` in one unit of work: (username, password) to print
    with `done`, or None for an unknown user; refusals one line each."""
    from khhf import config, db
    from khhf.services import ValidationError
    settings = config.load(args.config)
    engine = db.open_database(settings)
    try:
        with db.unit_of_work(db.session_factory(engine)) as session:
            result = action(session)
    except ValidationError as exc:
        for problem in exc.problems:
            print(f"khhf users {what}: {problem.message % problem.params}", file=sys.stderr)
        return 1
    finally:
        engine.dispose()
    if result is None:
        print(f"khhf users {what}: there is no user {args.username}", file=sys.stderr)
        return 1
    print(done.format(*result))
    return 0
