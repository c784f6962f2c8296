"""A customer manager's own pages: home (the workspace, webui.workspace),
profile, the on-duty switch.

Supervisors and administrators may read a manager's profile too, within
what webui.access.scope lets them see.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_login import current_user

from khhf.models import Manager
from khhf.services import accounts
from webui import workspace
from webui.access import allow, client_ip, load
from webui.db import writing
from webui.forms import DutyForm
from webui.redirects import local_path
from webui.reports import month_summary

bp = Blueprint("manager", __name__, url_prefix="/manager")


@bp.route("/")
@allow("manager")
def home():
    return workspace.home_page(workspace.own_manager())


@bp.route("/<int:manager_id>")
@allow("manager", "supervisor", "admin")
def profile(manager_id):
    manager = load(Manager, manager_id)
    # this month's figures, the feedback rate among them (khhf.services.reports)
    report_flt, report_total = month_summary(manager_id=manager.id)
    return render_template("manager/profile.html", manager=manager, duty_form=DutyForm(),
                           report_flt=report_flt, report_total=report_total,
                           report_args={"manager": manager.id})


@bp.route("/<int:manager_id>/duty", methods=["POST"])
@allow("manager")
def duty(manager_id):
    manager = load(Manager, manager_id)
    form = DutyForm()
    if form.validate_on_submit():
        on_duty = form.on_duty.data == "1"
        with writing(form) as w:
            accounts.set_on_duty(w.session, current_user, client_ip(), manager, on_duty)
        if w.saved:
            flash(gettext("You are now on duty: your desk phone rings first for your "
                          "customers, and you answer for the county's group.")
                  if on_duty else gettext("You are now off duty: your customers' hotline "
                                          "calls ring your mobile, not your desk phone."),
                  "success")
    # the phone pages switch from their own page (a path on this site only)
    return redirect(local_path(request.form.get("next"))
                    or url_for(".profile", manager_id=manager.id))
