"""The operation log (全程操作日志), searchable by administrators."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

from flask import Blueprint, current_app, render_template, request
from sqlalchemy import func, or_, select

from khhf import audit
from khhf.models import AuditLog
from webui.access import allow
from webui.db import get_db

bp = Blueprint("audit", __name__, url_prefix="/audit")

PAGE_SIZE = 50


@bp.route("/")
@allow("admin")
def index():
    args = request.args
    query = select(AuditLog)
    text = args.get("q", "").strip()
    if text:
        like = f"%{text}%"
        # people are found by name (actor or object) as well as by user name;
        # LIKE matches Chinese text as it is on SQLite and PostgreSQL alike
        query = query.where(or_(AuditLog.actor_name.ilike(like),
                                AuditLog.object_name.ilike(like),
                                AuditLog.username.ilike(like), AuditLog.detail.ilike(like),
                                AuditLog.ip.ilike(like), AuditLog.object_id == text))
    action = args.get("action", "")
    if action in audit.ACTIONS:
        query = query.where(AuditLog.action == action)
    since, until = _local_day(args.get("since")), _local_day(args.get("until"))
    if since:
        query = query.where(AuditLog.at >= since)
    if until:
        query = query.where(AuditLog.at < until + dt.timedelta(days=1))
    page = max(args.get("page", 1, type=int), 1)
    total = get_db().scalar(select(func.count()).select_from(query.subquery()))
    entries = get_db().scalars(query.order_by(AuditLog.id.desc())
                               .offset((page - 1) * PAGE_SIZE).limit(PAGE_SIZE)).all()
    return render_template("audit/index.html", entries=entries, total=total, page=page,
                           pages=max((total + PAGE_SIZE - 1) // PAGE_SIZE, 1),
                           actions=audit.ACTIONS)


def _local_day(value: str | None) -> dt.datetime | None:
    """The start of a local calendar day (YYYY-MM-DD) as naive UTC, or None."""
    try:
        day = dt.date.fromisoformat(value or "")
    except ValueError:
        return None
    start = dt.datetime.combine(day, dt.time(), ZoneInfo(current_app.config["TIMEZONE"]))
    return start.astimezone(dt.timezone.utc).replace(tzinfo=None)
