"""Sessions and the browser's protections: one home for both.

Sessions are signed cookies (Flask), so the server could not end one: a
cookie copied before log-out stayed valid until it expired. Now each log-in
stores the user's `session_epoch` (users table) in its session, and the
user loader accepts a session only while the number is still the user's.
Log-out, a new password and deactivation raise the number (khhf.models.User
.end_sessions): every session of that user, on every device, ends at once.

The cookie is HttpOnly, SameSite=Lax, and Secure whenever the request came
over HTTPS (directly, or through `web_proxy_hops` trusted reverse proxies:
only then are X-Forwarded-Proto/-For/-Host believed).

Every response carries a Content-Security-Policy that allows only this
site's own scripts, styles and images (the templates have no inline script
or style; tests/test_web_browser.py fails on any CSP report in the
console), refuses framing, sniffing, and sends the Referer only to this
site.
"""

from __future__ import annotations

import datetime as dt

from flask import Flask, current_app, request, session
from flask.sessions import SecureCookieSessionInterface
from werkzeug.middleware.proxy_fix import ProxyFix

from khhf import local_time

EPOCH_KEY = "session_epoch"
# when the log-in began, and (a phone log-in kept for the day) when it ends
LOGIN_AT_KEY, LOGIN_UNTIL_KEY = "login_at", "login_until"
# the role, which the health banner of the busy page reads (it cannot read the user)
ROLE_KEY = "role"

CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data:",  # Bootstrap draws its icons as data: SVGs
    "font-src 'self'",
    "connect-src 'self'",
    "object-src 'none'",
    "base-uri 'none'",
    "form-action 'self'",
    "frame-ancestors 'none'",
])
HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    # the dial view goes back to the page it came from: same-site only
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
HSTS = "max-age=31536000"


API_PREFIX = "/api/"


def is_api_request() -> bool:
    """Whether this request is for the integration API (webui/api)."""
    return request.path.startswith(API_PREFIX)


class SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, Secure when the request is HTTPS.
    Under /api/ there is no session: a browser's cookie is not even read
    (so it cannot authenticate an API call), and none is set."""

    def open_session(self, app: Flask, request):
        if request.path.startswith(API_PREFIX):
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, sess, response) -> None:
        if request.path.startswith(API_PREFIX):
            return None
        return super().save_session(app, sess, response)

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(app.config["SESSION_COOKIE_SECURE"] or request.is_secure)

    def get_expiration_time(self, app: Flask, sess) -> dt.datetime | None:
        """The cookie lasts as long as the log-in (log_in_ends)."""
        if sess.permanent and LOGIN_AT_KEY in sess:
            return dt.datetime.fromtimestamp(log_in_ends(sess, app), dt.timezone.utc)
        return super().get_expiration_time(app, sess)


def init_app(app: Flask, proxy_hops: int = 0) -> None:
    """Session cookies, security headers and (if configured) the proxy fix."""
    app.config.update(SESSION_COOKIE_HTTPONLY=True, SESSION_COOKIE_SAMESITE="Lax")
    app.session_interface = SessionInterface()
    if proxy_hops:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxy_hops, x_proto=proxy_hops,
                                x_host=proxy_hops)
    app.after_request(set_headers)


def set_headers(response):
    """The protections every response carries (static files and errors too)."""
    for name, value in HEADERS.items():
        response.headers.setdefault(name, value)
    if request.is_secure:
        response.headers.setdefault("Strict-Transport-Security", HSTS)
    return response


def start_session(user) -> None:
    """A fresh session for a new log-in (no fixation) that carries the user's
    current session epoch; only the chosen language survives."""
    fresh_session()
    session[EPOCH_KEY] = user.session_epoch
    session[ROLE_KEY] = user.role


def keep_until_end_of_day(now: dt.datetime | None = None) -> None:
    """Keep this log-in until the end of the local day (a manager's own
    phone, for the working day), never shorter than an ordinary log-in."""
    zone = current_app.config["TIMEZONE"]
    midnight = local_time.day_start(local_time.today(zone, now) + dt.timedelta(days=1), zone)
    session[LOGIN_UNTIL_KEY] = midnight.replace(tzinfo=dt.UTC).timestamp()


def log_in_ends(sess=None, app: Flask | None = None) -> float:
    """When this session's log-in ends (a UNIX time): SESSION_HOURS after it
    began, or, when kept for the day, the end of that day if later."""
    sess = session if sess is None else sess
    app = app or current_app
    ends = sess.get(LOGIN_AT_KEY, 0) + app.permanent_session_lifetime.total_seconds()
    return max(ends, sess.get(LOGIN_UNTIL_KEY, 0))


def keep_session(user) -> None:
    """After ending `user`'s sessions while they act (their own new password),
    keep this one: carry the new epoch."""
    session[EPOCH_KEY] = user.session_epoch


def session_is_current(user) -> bool:
    """True while this session's log-in has not been ended (see module doc)."""
    return session.get(EPOCH_KEY) == user.session_epoch


def fresh_session() -> None:
    """Forget everything but the chosen language."""
    lang = session.get("lang")
    session.clear()
    if lang:
        session["lang"] = lang
