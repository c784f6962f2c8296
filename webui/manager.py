"""A customer manager's own pages: home, profile, the on-duty switch.

Supervisors and administrators may read a manager's profile too, within
what webui.access.scope lets them see.
"""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, url_for
from flask_babel import gettext
from flask_login import current_user
from sqlalchemy import select

from khhf.models import Call, Customer, Manager, Task, User
from khhf.names import by_pinyin
from khhf.services import accounts
from webui.access import allow, client_ip, load, scope
from webui.db import get_db
from webui.forms import DutyForm, commit_or_show

bp = Blueprint("manager", __name__, url_prefix="/manager")


def _own_manager() -> Manager:
    manager = get_db().scalar(select(Manager).where(scope(Manager)))
    if manager is None:
        abort(404)  # a manager user without a manager row: an admin must fix it
    return manager


@bp.route("/")
@allow("manager")
def home():
    manager = _own_manager()
    customers = by_pinyin(get_db().scalars(select(Customer).where(scope(Customer))),
                          lambda c: c.name)
    tasks = get_db().scalars(select(Task).where(
        scope(Task), Task.status.in_(("pending", "dialing", "connected", "not_reached")))
        .order_by(Task.priority.desc(), Task.id).limit(200)).all()
    calls = get_db().scalars(select(Call).where(scope(Call))
                             .order_by(Call.id.desc()).limit(10)).all()
    # who answered a hotline call in the group: the colleagues' desk phones
    desk_names = dict(get_db().execute(
        select(Manager.desk_extension, User.display_name).join(User).where(
            Manager.county_id == manager.county_id, Manager.desk_extension.is_not(None))).all())
    return render_template("manager/home.html", manager=manager, customers=customers,
                           tasks=tasks, calls=calls, desk_names=desk_names,
                           duty_form=DutyForm())


@bp.route("/<int:manager_id>")
@allow("manager", "supervisor", "admin")
def profile(manager_id):
    manager = load(Manager, manager_id)
    return render_template("manager/profile.html", manager=manager, duty_form=DutyForm())


@bp.route("/<int:manager_id>/duty", methods=["POST"])
@allow("manager")
def duty(manager_id):
    manager = load(Manager, manager_id)
    form = DutyForm()
    if form.validate_on_submit():
        on_duty = form.on_duty.data == "1"
        if commit_or_show(get_db(), form, lambda: accounts.set_on_duty(
                get_db(), current_user, client_ip(), manager, on_duty)):
            flash(gettext("You are now on duty: your desk phone rings first for your "
                          "customers, and you answer for the county's group.")
                  if on_duty else gettext("You are now off duty: your customers' hotline "
                                          "calls ring your mobile, not your desk phone."),
                  "success")
    return redirect(url_for(".profile", manager_id=manager.id))
