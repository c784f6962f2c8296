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

from flask import (
    Flask,
    current_app,
    flash,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    session,
    url_for,
)
from flask_babel import gettext, lazy_gettext
from flask_login import LoginManager, current_user, logout_user
from flask_wtf.csrf import CSRFError, CSRFProtect
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.orm import joinedload

from khhf import config as khhf_config
from khhf import db as khhf_db
from khhf.models import SmsStatus, User
from khhf.phones import mask_phone
from khhf.services import tasks
from webui import (
    access,
    admin,
    api,
    audit,
    auth,
    calls,
    campaigns,
    county,
    customers,
    health,
    i18n,
    imports,
    live,
    manager,
    mobile,
    params,
    recordings,
    reports,
    security,
    sms,
    workspace,
)
from webui.api import core as api_core
from webui.db import get_db

DEFAULTS = {
    # how long a log-in lasts, from the moment of log-in
    "SESSION_HOURS": 8,
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

    engine = app.extensions["khhf_engine"] = khhf_db.open_database(settings)
    app.extensions["khhf_sessions"] = khhf_db.session_factory(engine)
    app.teardown_appcontext(_close_db)

    security.init_app(app, proxy_hops=settings.web_proxy_hops)
    csrf.init_app(app)
    i18n.init_app(app)
    login_manager.init_app(app)
    login_manager.login_view = "auth.login"
    login_manager.blueprint_login_views = {"mobile": "mobile.login"}  # the phone's own
    login_manager.login_message = lazy_gettext("Please log in first.")
    login_manager.login_message_category = "info"

    params.init_app(app)  # before the routes: every <int:...> is a bounded id
    for module in (auth, admin, manager, county, audit, calls, sms, campaigns, imports,
                   customers, workspace, mobile, recordings, live, reports, api):
        app.register_blueprint(module.bp)
    csrf.exempt(api.bp)  # bearer tokens, no cookie: nothing for a forged page to ride on
    health.init_app(app)  # GET /healthz, public (webui/health.py)

    app.before_request(_expire_old_log_ins)
    app.before_request(access.deny_routes_without_rule)
    app.before_request(params.refuse_nul_characters)
    app.jinja_env.filters["mask_phone"] = mask_phone
    app.jinja_env.filters["local"] = _local
    # the vocabularies templates compare with (khhf.models, khhf.services.tasks)
    app.jinja_env.globals.update(SmsStatus=SmsStatus, DIALABLE_TASK_STATUSES=tasks.DIALABLE,
                                 CLOSED_TASK_STATUSES=tasks.CLOSED)
    for code in (400, 401, 403, 404, 405, 413, 429):
        app.register_error_handler(code, _error_page)
    app.register_error_handler(CSRFError, _csrf_error)
    app.register_error_handler(params.BadParameter, _bad_parameter)
    for unavailable in (DBAPIError, DisconnectionError):
        app.register_error_handler(unavailable, _database_busy)
    return app


def _local(utc: dt.datetime, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """The template filter `local`: a naive-UTC time from the database in
    the site's time zone (khhf.local_time), as `fmt`."""
    return f"{current_app.extensions['khhf_settings'].local(utc):{fmt}}"


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    """The session's user, if the account is enabled and this log-in has
    not been ended since (log-out, new password: webui.security)."""
    # with its manager row in the same query: every page reads
    # current_user.manager (the nav), which was a second query per request
    user = get_db().get(User, int(user_id), options=[joinedload(User.manager)])
    if user is None or not user.is_active or not security.session_is_current(user):
        security.fresh_session()
        return None
    return user


def _close_db(_exc):
    db = g.pop("db", None)
    if db is not None:
        db.close()  # anything not committed is rolled back


def _expire_old_log_ins():
    """Log-ins end SESSION_HOURS after they began (or, kept on a manager's
    phone for the day, at its end: webui.security), however busy the user is."""
    if not current_user.is_authenticated:
        return None
    if dt.datetime.now(dt.timezone.utc).timestamp() > security.log_in_ends():
        logout_user()
        session.clear()
        flash(gettext("Your session has expired; please log in again."), "warning")
        # the phone pages have their own log-in
        login = login_manager.blueprint_login_views.get(request.blueprint, "auth.login")
        return redirect(url_for(login, next=request.full_path))
    return None


def _error_page(error):
    if security.is_api_request():
        return api_core.http_error(error)
    return _render_error(error, None, error.code)


def _bad_parameter(error):
    if security.is_api_request():
        return api_core.error(400, message=error.description)
    return _render_error(error, error.description, 400)


def _render_error(error, message, code: int):
    """errors.html; while the database is unavailable (its nav loads the
    user) the busy page instead, never a crash on top of the error."""
    try:
        return render_template("errors.html", error=error, message=message), code
    except (DBAPIError, DisconnectionError) as unavailable:
        return _database_busy(unavailable)


def _database_busy(error):
    """The database cannot be used now: SQLite's write lock stayed taken for
    the whole busy timeout (every write waits its turn, see
    webui.db.writing), or the database server is down or its connection
    broke. Nothing was written; the user is told, in words, to try again
    (JSON for the workspace's scripts), never shown a crash or the driver's
    message. Any other database error stays a 500."""
    if not khhf_db.is_unavailable(error):
        raise error
    try:
        _close_db(None)  # roll back
    except Exception:  # the connection is already gone
        g.pop("db", None)
    headers = {"Retry-After": "5"}
    if security.is_api_request():
        return api_core.error(503, headers=headers)
    if khhf_db.is_busy(error):
        message = gettext("The system is busy; nothing was saved. Try again in a moment.")
    else:
        message = gettext("The system cannot save right now; please try again later.")
    current_app.logger.warning("%s %s: the database is unavailable (%s)", request.method,
                               request.path, type(getattr(error, "orig", error)).__name__)
    if request.accept_mimetypes.best == "application/json":
        return jsonify(ok=False, message=message), 503, headers
    # rendered without the context processors: Flask-Login's would load the
    # user from the database, which is what is unavailable
    page = current_app.jinja_env.get_template("busy.html").render(
        message=message, health_banner=health.banner(session.get(security.ROLE_KEY)))
    return page, 503, headers


def _csrf_error(error):
    message = gettext("The form was missing its security token or it had expired. "
                           "Reload the page and submit it again.")
    return _render_error(error, message, 400)
