"""GET /healthz: the system's health as JSON, for monitoring (khhf.health),
and the staff's banner: the same checks, in words, on every page.

Public (no log-in): the answer holds no personal data, only each check's
name, whether it is ok, a detail of counts, times and states, and what to
do. HTTP 200 when every check is ok, 503 otherwise.

Cheap and safe against abuse: the checks run at most once every
CACHE_SECONDS per process, one request at a time (the others wait for that
answer); none reads more than an indexed count, none writes.

The banner (`banner`, shown by base.html, the phone pages and the busy
page) never waits for the checks: a page that finds the answer stale starts
a refresh in the background and shows the answer it has. It reads no
database itself, so it shows while the database is down: administrators
and county supervisors see every red check (khhf.i18n.HEALTH_NOTICES says
what is wrong and what to do; a check with no notice shows by its name),
customer managers only the few that stop their work.
"""

from __future__ import annotations

import logging
import threading
import time

from flask import Blueprint, current_app, jsonify, session
from flask_babel import gettext
from flask_login import current_user

from khhf import health
from khhf.i18n import health_notice
from webui import security
from webui.access import public

bp = Blueprint("health", __name__)

CACHE_SECONDS = 5.0


class _Cache:
    def __init__(self, settings):
        self.settings = settings
        self.lock = threading.Lock()
        self.engine = None
        self.at = 0.0
        self.report: dict | None = None

    def _stale(self) -> bool:
        return self.report is None or time.monotonic() - self.at >= CACHE_SECONDS

    def _refresh(self) -> None:
        if self.engine is None:
            self.engine = health.health_engine(self.settings)
        checks = health.gather(self.settings, self.engine, serving="web")
        self.report, self.at = health.report(checks), time.monotonic()

    def get(self) -> dict:
        """A fresh answer (waiting for the checks when it is stale)."""
        with self.lock:
            if self._stale():
                self._refresh()
            assert self.report is not None
            return self.report

    def latest(self) -> dict | None:
        """The answer at hand, never waiting; a stale one starts a refresh
        in the background (one at a time)."""
        if self._stale() and self.lock.acquire(blocking=False):
            threading.Thread(target=self._refresh_in_background, daemon=True,
                             name="khhf-health").start()
        return self.report

    def _refresh_in_background(self) -> None:
        try:
            if self._stale():
                self._refresh()
        except Exception:  # a broken check must not break pages; /healthz shows it
            logging.getLogger(__name__).exception("the health checks failed")
        finally:
            self.lock.release()


def init_app(app) -> None:
    app.extensions["khhf_health"] = _Cache(app.extensions["khhf_settings"])
    app.register_blueprint(bp)
    app.context_processor(lambda: {"health_banner": banner()})


STAFF = ("admin", "supervisor")


def viewer_role() -> str | None:
    """The role of whoever asks, without reading the database when the
    user is not loaded yet (the busy page)."""
    try:
        if current_user.is_authenticated:
            return current_user.role
    except Exception:  # noqa: BLE001 - loading the user needs the database
        pass
    return session.get(security.ROLE_KEY)


def banner(role: str | None = None) -> list[dict]:
    """What the viewer reads of the red health checks: [{name, text}, ...]
    (empty for a visitor not logged in, or when all is well)."""
    role = role or viewer_role()
    if role is None:
        return []
    report = current_app.extensions["khhf_health"].latest()
    if report is None:
        return []
    lines = []
    for check in report["checks"]:
        if check["ok"]:
            continue
        notice = health_notice(check)
        if role in STAFF:
            todo = notice.todo if role == "admin" else gettext(
                "Tell the system administrator.")
            lines.append({"name": check["name"], "text": f"{notice.problem} {todo}"})
        elif notice.manager is not None:
            lines.append({"name": check["name"], "text": str(notice.manager)})
    return lines


@bp.get("/healthz")
@public
def healthz():
    report = current_app.extensions["khhf_health"].get()
    return jsonify(report), 200 if report["ok"] else 503, {"Cache-Control": "no-store"}
