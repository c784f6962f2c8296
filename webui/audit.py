"""The operation log (全程操作日志), searchable by administrators."""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, current_app, render_template, request
from flask_babel import lazy_gettext as _l
from sqlalchemy import func, or_, select

from khhf import audit, i18n, local_time
from khhf.models import AuditLog
from webui import params
from webui.access import allow
from webui.db import get_db
from webui.params import Day, Whole

bp = Blueprint("audit", __name__, url_prefix="/audit")

PAGE_SIZE = 50
MAX_PAGE = 1_000_000


@bp.route("/")
@allow("admin")
@params.query(page=Whole(_l("Page"), 1, MAX_PAGE, 1), since=Day(_l("From")), until=Day(_l("To")))
def index(page, since, until):
    args = request.args
    query = select(AuditLog)
    text = args.get("q", "").strip()
    if text:
        like = f"%{text}%"
        # people are found by name (actor or object) as well as by user name;
        # LIKE matches Chinese text as it is on SQLite and PostgreSQL alike.
        # An address is shown by its label (命令行 for "cli"): the label finds it too
        labelled = [address for address, label in i18n.AUDIT_ADDRESS_LABELS.items()
                    if text.casefold() in str(label).casefold()]
        query = query.where(or_(AuditLog.actor_name.ilike(like),
                                AuditLog.object_name.ilike(like),
                                AuditLog.username.ilike(like), AuditLog.detail.ilike(like),
                                AuditLog.ip.ilike(like), AuditLog.ip.in_(labelled),
                                AuditLog.object_id == text))
    action = args.get("action", "")
    if action in audit.ACTIONS:
        query = query.where(AuditLog.action == action)
    if since:
        query = query.where(AuditLog.at >= _local_start(since))
    if until:
        query = query.where(AuditLog.at < _local_start(until + dt.timedelta(days=1)))
    total = get_db().scalar(select(func.count()).select_from(query.subquery()))
    entries = get_db().scalars(query.order_by(AuditLog.id.desc())
                               .offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)).all()
    return render_template("audit/index.html", entries=entries, total=total, page=page,
                           pages=max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1),
                           actions=audit.ACTIONS)


def _local_start(day: dt.date) -> dt.datetime:
    """The start of a local calendar day as naive UTC."""
    return local_time.day_start(day, current_app.config["TIMEZONE"])
