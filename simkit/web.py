"""Helpers for the web UI tests: an app on a fresh SQLite database made
from schema.sql and filled with the demo data."""

from __future__ import annotations

import datetime as dt
import re

from sqlalchemy import select

from khhf import config, db
from khhf.models import User
from simkit import seed as demo
from webui import create_app
from webui.security import EPOCH_KEY


def make_app(tmp_path, settings: dict | None = None, **flask_config):
    """(app, demo seed) on tmp_path/web.db with fresh secrets; `settings`
    overrides khhf settings, `flask_config` Flask's own options."""
    url = f"sqlite:///{tmp_path / 'web.db'}"
    engine = db.make_engine(url)
    db.create_schema(engine)
    with db.unit_of_work(db.session_factory(engine)) as session:
        seeded = demo.seed(session)
    engine.dispose()
    khhf_settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path, database_url=url,
                                     **(settings or {}))
    app = create_app(khhf_settings, {"TESTING": True, **flask_config})
    return app, seeded


def session_for(app):
    """A database session on the app's database, for arranging and checking."""
    return app.extensions["khhf_sessions"]()


def user_id(app, username: str) -> int:
    with session_for(app) as s:
        return s.scalar(select(User.id).where(User.username == username))


def log_in_as(client, app, username: str) -> None:
    """Put a logged-in session in the client's cookie, without the form."""
    with session_for(app) as s:
        uid, epoch = s.execute(select(User.id, User.session_epoch)
                               .where(User.username == username)).one()
    with client.session_transaction() as sess:
        sess["_user_id"] = str(uid)
        sess["_fresh"] = True
        sess["login_at"] = dt.datetime.now(dt.timezone.utc).timestamp()
        sess[EPOCH_KEY] = epoch


def csrf_token(client, path: str) -> str:
    html = client.get(path).get_data(as_text=True)
    tag = re.search(r'<input[^>]*name="csrf_token"[^>]*>', html).group(0)
    return re.search(r'value="([^"]+)"', tag).group(1)


def log_in(client, username: str, password: str):
    token = csrf_token(client, "/login")
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": token})
