"""The web UI (Flask): where administrators, county supervisors and
customer managers work.

    app = create_app()                       # settings from khhf.config
    app = create_app(settings, {"TESTING": True})   # given settings, Flask overrides

khhf's Settings are the only source of configuration (database, secret key,
time zone, the bridge, the calling window); the dict only sets Flask's own
options (TESTING, WTF_CSRF_ENABLED, ...).

One blueprint per area; every view declares who may open it with
webui.access.allow, and objects are loaded through webui.access.load.
"""

from __future__ import annotations

import datetime as dt

from flask import (Flask, current_app, flash, g, redirect, render_template, request, session,
                   url_for)
from flask_babel import gettext, lazy_gettext
from flask_login import LoginManager, current_user, logout_user
from flask_wtf.csrf import CSRFError, CSRFProtect

from khhf import config as khhf_config
from khhf import db as khhf_db
from khhf.models import User
from khhf.phones import mask_phone

from webui import access, admin, audit, auth, calls, county, i18n, manager, workspace
from webui.db import get_db

DEFAULTS = {
    # how long a log-in lasts, from the moment of log-in
    "SESSION_HOURS": 8,
    # log-in rate limit, per user name and IP address
    "LOGIN_MAX_FAILURES": 5,
    "LOGIN_FAILURE_MINUTES": 15,
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Lax",
    "WTF_CSRF_TIME_LIMIT": None,  # the token lives as long as the session
}

csrf = CSRFProtect()
login_manager = LoginManager()


def create_app(settings: khhf_config.Settings | None = None,
               flask_config: dict | None = None) -> Flask:
    """The application for `settings` (default: khhf.config.load());
    `flask_config` sets Flask's own options."""
    settings = settings or khhf_config.load()
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    app.extensions["khhf_settings"] = settings
    app.config.update(SECRET_KEY=settings.require("secret_key"),
                      DATABASE_URL=settings.database_url, TIMEZONE=settings.timezone)
    app.config.update(flask_config or {})
    app.config["PERMANENT_SESSION_LIFETIME"] = dt.timedelta(hours=app.config["SESSION_HOURS"])

    engine = khhf_db.make_engine(app.config["DATABASE_URL"])
    app.extensions["khhf_sessions"] = khhf_db.session_factory(engine)
    app.teardown_appcontext(_close_db)

    csrf.init_app(app)
    i18n.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.login_message = lazy_gettext("Please log in first.")
    login_manager.login_message_category = "info"

    for module in (auth, admin, manager, county, audit, calls, workspace):
        app.register_blueprint(module.bp)

    app.before_request(_expire_old_log_ins)
    app.before_request(access.deny_routes_without_rule)
    app.jinja_env.filters["mask_phone"] = mask_phone
    for code in (400, 403, 404, 405, 429):
        app.register_error_handler(code, _error_page)
    app.register_error_handler(CSRFError, _csrf_error)
    return app


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    user = get_db().get(User, int(user_id))
    return user if user is not None and user.is_active else None


def _close_db(_exc):
    db = g.pop("db", None)
    if db is not None:
        db.close()  # anything not committed is rolled back


def _expire_old_log_ins():
    """Log-ins end SESSION_HOURS after they began, however busy the user is."""
    if not current_user.is_authenticated:
        return None
    started = session.get("login_at", 0)
    lifetime = current_app.permanent_session_lifetime.total_seconds()
    if dt.datetime.now(dt.timezone.utc).timestamp() - started > lifetime:
        logout_user()
        session.clear()
        flash(gettext("Your session has expired; please log in again."), "warning")
        return redirect(url_for("auth.login", next=request.full_path))
    return None


def _error_page(error):
    return render_template("errors.html", error=error), error.code


def _csrf_error(error):
    message = gettext("The form was missing its security token or it had expired. "
                           "Reload the page and submit it again.")
    return render_template("errors.html", error=error, message=message), 400
