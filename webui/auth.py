"""Log-in, log-out, and the front door that sends each role home."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from flask_babel import gettext
from flask_login import current_user, login_user, logout_user

from khhf.services import accounts
from webui import security
from webui.access import allow, client_ip, public
from webui.db import get_db, writing
from webui.forms import ConfirmForm, LoginForm
from webui.redirects import local_path

bp = Blueprint("auth", __name__)

HOMES = {"admin": "admin.index", "manager": "manager.home", "supervisor": "county.home"}


@bp.route("/")
@allow("admin", "manager", "supervisor")
def index():
    return redirect(url_for(HOMES[current_user.role]))


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    if current_user.is_authenticated:
        return redirect(url_for("auth.index"))
    return log_in_page(LoginForm(), "auth/login.html", "auth.index")


def log_in_page(form: LoginForm, template: str, home: str, keep_for_the_day: bool = False):
    """The log-in: check the form's user name and password (rate-limited,
    audited), start a fresh session and go to `next` or `home`; else render
    `template` with the form's errors. The phone pages (webui.mobile) use it
    too, and may keep the log-in until the end of the day."""
    if form.validate_on_submit():
        # the slow password hash first, only reading; then the unit of work
        # that writes (webui.db.writing: it holds SQLite's write lock while it runs)
        checked = accounts.check_password(get_db(), form.username.data, form.password.data)
        settings = current_app.extensions["khhf_settings"]
        with writing() as w:
            try:
                user = accounts.log_in(
                    w.session, form.username.data, form.password.data, client_ip(),
                    checked=checked, max_failures=settings.login_max_failures,
                    window=dt.timedelta(minutes=settings.login_failure_minutes))
            except accounts.LoginRefused as refused:
                # saved as the block ends: the failed attempt is logged, and counts
                form.password.errors = [gettext(refused.message, **refused.params)]
                return render_template(template, form=form), (
                    429 if refused.rate_limited else 401)
        security.start_session(user)  # no session fixation: a new one per log-in
        login_user(user)
        session.permanent = True
        session[security.LOGIN_AT_KEY] = dt.datetime.now(dt.timezone.utc).timestamp()
        if keep_for_the_day:
            security.keep_until_end_of_day()
        return redirect(local_path(request.args.get("next")) or url_for(home))
    return render_template(template, form=form)


@bp.route("/logout", methods=["POST"])
@allow("admin", "manager", "supervisor")
def logout():
    form = ConfirmForm()
    if form.validate_on_submit():
        with writing() as w:
            accounts.log_out(w.session, current_user, client_ip())  # every session, every device
        logout_user()
        security.fresh_session()
    # the phone pages go back to their own log-in (a path on this site only)
    return redirect(local_path(request.form.get("next")) or url_for("auth.login"))
