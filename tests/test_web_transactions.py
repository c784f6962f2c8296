"""The web's transactions: every write goes through webui.db.writing, which
ends the request's read, begins the write, and commits or shows the
service's problems; nothing else in webui commits or rolls back, and a GET
cannot write. Against a real SQLite database made by the demo seed."""

from __future__ import annotations

import ast
import sqlite3
from pathlib import Path

import pytest
from flask_wtf import FlaskForm
from sqlalchemy import func, select
from wtforms import StringField

from khhf import audit
from khhf.models import AuditLog, User
from khhf.services import Problem, ValidationError
from simkit.web import csrf_token, log_in, make_app, session_for
from webui.db import get_db, writing

WEBUI = Path(__file__).resolve().parent.parent / "webui"
TRANSACTION_CALLS = {"commit", "rollback", "begin", "begin_nested", "begin_write"}


def transaction_calls(source: str) -> list[tuple[int, str]]:
    """(line, name) of every call of a transaction method (x.commit(), ...),
    but a service's function of that name (distribution.commit)."""
    tree = ast.parse(source)
    services = {alias.asname or alias.name for node in ast.walk(tree)
                if isinstance(node, ast.ImportFrom) and node.module == "khhf.services"
                for alias in node.names}
    return [(node.lineno, node.func.attr) for node in ast.walk(tree)
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in TRANSACTION_CALLS
            and not (isinstance(node.func.value, ast.Name) and node.func.value.id in services)]


def test_only_the_helper_commits_or_rolls_back():
    found = {f"{path.relative_to(WEBUI.parent)}:{line}": name
             for path in sorted(WEBUI.rglob("*.py")) if path != WEBUI / "db.py"
             for line, name in transaction_calls(path.read_text(encoding="utf-8"))}
    assert not found, f"write through webui.db.writing instead: {found}"
    assert {"commit", "rollback", "begin_write"} <= {
        name for _line, name in transaction_calls((WEBUI / "db.py").read_text(encoding="utf-8"))}


@pytest.mark.parametrize("source", [
    "get_db().commit()",
    "db = get_db()\ndb.rollback()",
    "def view():\n    session.commit()  # after the form",
    "from khhf import db\ndb.begin_write(session)",
    "from khhf.services import distribution\nsession.commit()",
])
def test_a_commit_outside_the_helper_is_seen(source):
    assert transaction_calls(source)


def test_a_service_named_commit_is_not_a_commit():
    assert not transaction_calls("from khhf.services import distribution\n"
                                 "distribution.commit(session, user)")


class NameForm(FlaskForm):
    name = StringField()


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app, _ = make_app(tmp_path_factory.mktemp("transactions"), WTF_CSRF_ENABLED=False)
    return app


def audit_count(app) -> int:
    with session_for(app) as s:
        return s.scalar(select(func.count()).select_from(AuditLog))


def test_a_get_cannot_write(app):
    before = audit_count(app)
    with app.test_request_context("/", method="GET"):
        with pytest.raises(RuntimeError, match="only reads"):
            with writing() as w:
                audit.record(w.session, None, "login")
    assert audit_count(app) == before


def test_a_write_is_committed(app):
    before = audit_count(app)
    with app.test_request_context("/", method="POST"):
        with writing(NameForm()) as w:
            audit.record(w.session, None, "login")
        assert w.saved and not w.problems
    assert audit_count(app) == before + 1


def test_a_refusal_is_shown_on_the_form_and_nothing_is_written(app):
    before = audit_count(app)
    with app.test_request_context("/", method="POST", data={"name": ""}):
        form = NameForm()
        with writing(form) as w:
            audit.record(w.session, None, "login")
            w.session.flush()  # even what reached the database is undone
            raise ValidationError([Problem("name", "Type a name.")])
        assert not w.saved
        assert w.problems == [Problem("name", "Type a name.")]
        assert form.name.errors == ["Type a name."]
    assert audit_count(app) == before


@pytest.mark.parametrize("error", [ValidationError([Problem("name", "Type a name.")]),
                                   KeyError("any other error")])
def test_without_a_form_a_refusal_and_any_error_go_on_to_the_view(app, error):
    before = audit_count(app)
    with app.test_request_context("/", method="POST"):
        with pytest.raises(type(error)):
            with writing() as w:
                audit.record(w.session, None, "login")
                w.session.flush()
                raise error
    assert audit_count(app) == before


def test_the_write_begins_afresh_after_the_read(app):
    """On SQLite a transaction that has read cannot start writing after
    another connection committed ("database is locked" at once): the helper
    ends the read and begins the write as a writer."""
    with app.test_request_context("/", method="POST"):
        read = get_db().scalar(select(func.count()).select_from(AuditLog))  # the read begins
        with session_for(app) as other:  # the AMI bridge, say, commits meanwhile
            audit.record(other, None, "login")
            other.commit()
        with writing() as w:
            audit.record(w.session, None, "login")
        assert w.session.scalar(select(func.count()).select_from(AuditLog)) == read + 2


def test_a_post_that_writes_nothing_does_not_wait_for_the_write_lock(tmp_path):
    """Only the write takes SQLite's write lock: while another process holds
    it, a form post that the form refuses before any write is answered at
    once, not after the busy timeout with the busy page."""
    app, seeded = make_app(tmp_path)
    admin = app.test_client()
    assert log_in(admin, "admin", seeded["passwords"]["admin"]).status_code == 302
    token = csrf_token(admin, "/admin/")
    with session_for(app) as s:
        supervisor_id = s.scalar(select(User.id).where(User.username == "supervisor"))
    holder = sqlite3.connect(app.config["DATABASE_URL"].split("///", 1)[1], isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        assert admin.post(f"/admin/users/{supervisor_id}", data={
            "csrf_token": token + "stale"}).status_code == 400
    finally:
        holder.execute("ROLLBACK")
        holder.close()
