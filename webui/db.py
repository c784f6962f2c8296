"""The web's database work: each request reads through one session, and
every write goes through one helper, `writing`.

    form = CountyForm()
    if form.validate_on_submit():
        with writing(form) as w:
            counties.create_county(w.session, current_user, client_ip(), ...)
        if w.saved:
            return redirect(...)
    return render_template(..., form=form)    # the problems are on the form

A request's reads are plain transactions (the session is closed, and so
rolled back, when the request ends: see create_app). `writing` ends the
read, begins a writing transaction, runs the block and commits; when a
service refuses the input (khhf.services.ValidationError) it rolls back
and puts the problems on the form. It is the only place in webui that
commits (tests/test_web_transactions.py), and it refuses to run for a GET or
HEAD: they only read (tests/test_web_routes.py walks every one).

Why the write is begun afresh: on SQLite a transaction that has read cannot
start writing once another connection (the AMI bridge, the AGI service,
another worker) has committed: it fails at once with "database is locked",
whatever the busy timeout. A transaction declared a writer up front (BEGIN
IMMEDIATE, khhf.db.begin_write) waits for its turn instead; if the lock
stays taken for the whole busy timeout, nothing was written and the user
sees the busy page (webui._database_busy, 503).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from flask import current_app, g, request
from flask_wtf import FlaskForm
from sqlalchemy.orm import Session

from khhf import db as khhf_db
from khhf.models import AuditLog
from khhf.services import Problem, ValidationError
from webui.forms import show_problems

WRITING_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def get_db() -> Session:
    """This request's session, for reading; write with `writing`."""
    if "db" not in g:
        g.db = current_app.extensions["khhf_sessions"]()
    return g.db


class Write:
    """A unit of work begun by `writing`: its session and, after the
    block, whether it was saved or the service's problems."""

    def __init__(self, session: Session):
        self.session = session
        self.problems: list[Problem] = []

    @property
    def saved(self) -> bool:
        return not self.problems


@contextmanager
def writing(form: FlaskForm | None = None) -> Iterator[Write]:
    """One writing unit of work of this request: end the read, begin the
    write, run the block, commit. A refusal (ValidationError) rolls it
    back; with `form` its problems go on the form (and `saved` is False),
    without one the error goes on to the view. Any other error rolls back
    and goes on (a busy database: the busy page)."""
    if request.method not in WRITING_METHODS:
        raise RuntimeError(f"a {request.method} request only reads: no write for "
                           f"{request.path}")
    session = get_db()
    session.rollback()  # end the read: what it loaded is read again in the write
    unit = Write(session)
    try:
        khhf_db.begin_write(session)
        yield unit
    except ValidationError as error:
        session.rollback()
        if form is None:
            raise
        unit.problems = list(error.problems)
        show_problems(form, error)
    except BaseException:
        session.rollback()
        raise
    else:
        session.commit()


def record_read(add_entries: Callable[[Session], object]) -> None:
    """The audit entry of a read (an API client's GET, or a refused call):
    the one write a GET may make, in a short unit of work of its own that
    may add audit entries and nothing else."""
    session = get_db()
    session.rollback()  # end the read
    try:
        khhf_db.begin_write(session)
        add_entries(session)
        if session.dirty or session.deleted or \
                any(not isinstance(obj, AuditLog) for obj in session.new):
            raise RuntimeError(f"record_read may only add audit entries ({request.path})")
    except BaseException:
        session.rollback()
        raise
    session.commit()


def reread(obj):
    """`obj` as the database has it now: end this request's read, so that
    what another process committed since it began is seen (an import job
    its thread has finished)."""
    session = get_db()
    session.rollback()
    session.refresh(obj)
    return obj
