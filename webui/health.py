"""GET /healthz: the system's health as JSON, for monitoring (khhf.health).

Public (no log-in): the answer holds no personal data, only each check's
name, whether it is ok, a detail of counts, times and states, and what to
do. HTTP 200 when every check is ok, 503 otherwise.

Cheap and safe against abuse: the checks run at most once every
CACHE_SECONDS per process, one request at a time (the others wait for that
answer); none reads more than an indexed count, none writes.
"""

from __future__ import annotations

import threading
import time

from flask import Blueprint, current_app, jsonify

from khhf import health
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

    def get(self) -> dict:
        with self.lock:
            if self.report is None or time.monotonic() - self.at >= CACHE_SECONDS:
                if self.engine is None:
                    self.engine = health.health_engine(self.settings)
                checks = health.gather(self.settings, self.engine, serving="web")
                self.report, self.at = health.report(checks), time.monotonic()
            return self.report


def init_app(app) -> None:
    app.extensions["khhf_health"] = _Cache(app.extensions["khhf_settings"])
    app.register_blueprint(bp)


@bp.get("/healthz")
@public
def healthz():
    report = current_app.extensions["khhf_health"].get()
    return jsonify(report), 200 if report["ok"] else 503, {"Cache-Control": "no-store"}
