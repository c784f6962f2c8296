"""A county supervisor's pages: their own county only."""

from __future__ import annotations

from flask import Blueprint, render_template
from flask_login import current_user
from sqlalchemy import func, select

from khhf.models import County, Customer, Manager
from khhf.services import lookups, workspace
from webui.access import allow, load, scope
from webui.campaigns import county_progress as campaign_progress
from webui.db import get_db
from webui.reports import month_summary

bp = Blueprint("county", __name__, url_prefix="/county")


@bp.route("/")
@allow("supervisor")
def home():
    db = get_db()
    county = load(County, current_user.county_id)
    customers = dict(db.execute(
        select(Customer.manager_id, func.count()).where(scope(Customer))
        .group_by(Customer.manager_id)).all())
    managers = lookups.managers(db, scope(Manager))
    active, progress, names = campaign_progress(county.id)
    report_flt, report_total = month_summary(county_id=county.id)
    return render_template("county/home.html", county=county, managers=managers,
                           report_flt=report_flt, report_total=report_total,
                           customers=customers, campaigns=active, progress=progress,
                           names=names, overdue=workspace.overdue_by_manager(db, county.id))
