"""The manager's phone pages (手机版, /m/): made for a phone first.

A manager away from the desk works from their own phone, often on a slow
mobile connection: so these are small pages of their own (one small style
sheet, one small script, no Bootstrap), not the desktop workspace squeezed
to 375 px. Everything behind them is the desktop's: the task lists
(khhf.services.workspace), 呼叫 (webui.calls.dial and
khhf.services.dialing, with every refusal), the live state (GET /calls/<id>)
and the result form (webui.workspace.save_result).

- /m/login: the log-in, with "keep me logged in on this phone until the end
  of the day" (webui.security.keep_until_end_of_day).
- /m/: the call-backs that are due (the desktop's reminder, polled the same
  way), then today's tasks by status, as cards.
- /m/tasks/<id>: the customer, the script, 呼叫 from the desk phone or the
  mobile (a two-leg call, 双呼), the live call state and the result form,
  with an optional call-back time.
"""

from __future__ import annotations

from flask import Blueprint, flash, redirect, render_template, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from wtforms import BooleanField

from khhf.models import Task, utcnow
from khhf.services import campaigns, dialing, tasks
from khhf.services import workspace as tasks_view
from webui import auth, workspace
from webui.access import allow, load, public
from webui.calls import progress_label
from webui.db import get_db
from webui.forms import LoginForm

bp = Blueprint("mobile", __name__, url_prefix="/m")

# a phone page of tasks: small, the next page is a tap away
PAGE_SIZE = 20


class PhoneLoginForm(LoginForm):
    keep_for_the_day = BooleanField(_l("Keep me logged in on this phone until the end of "
                                       "the day"), default=True)


@bp.route("/login", methods=["GET", "POST"])
@public
def login():
    if current_user.is_authenticated:
        return redirect(url_for(".home"))
    form = PhoneLoginForm()
    return auth.log_in_page(form, "mobile/login.html", "mobile.home",
                            keep_for_the_day=bool(form.keep_for_the_day.data))


@bp.route("/")
@allow("manager", "supervisor", "admin")
def home():
    """The manager's tasks in one tab, as cards; other roles have no phone pages."""
    if current_user.role != "manager":
        return redirect(url_for("auth.index"))
    manager = workspace.own_manager()
    tab, search, _after, counts, listing = workspace.task_list(manager, size=PAGE_SIZE)
    session = get_db()
    now = utcnow()
    # the desktop's reminder, as cards: call-backs whose time has come
    due = tasks_view.due_callbacks(session, manager.id, now)
    return render_template(
        "mobile/tasks.html", manager=manager, tab=tab, search=search, tabs=tasks_view.TABS,
        tab_labels=workspace.TAB_LABELS, counts=counts,
        listing=listing, due=due,
        overdue={t.id for t in (*listing.tasks, *due) if tasks_view.is_overdue(t, now)})


def _task_page(task: Task, form: workspace.ResultForm):
    manager = workspace.own_manager()
    calls = tasks_view.task_calls(get_db(), task.id, limit=10)
    live = tasks_view.live_call(get_db(), task.id)
    script = campaigns.script_for(task.task_type, current_user.display_name)
    return render_template(
        "mobile/task.html", task=task, manager=manager, calls=calls, live=live, form=form,
        script=script, tab=tasks_view.tab_of(task), tab_labels=workspace.TAB_LABELS,
        is_open=task.status in tasks.OPEN, dialable=task.status in tasks.DIALABLE,
        device=dialing.default_device(manager), overdue=tasks_view.is_overdue(task),
        progress_label=progress_label)


@bp.route("/tasks/<int:task_id>")
@allow("manager")
def task(task_id):
    task = load(Task, task_id)
    latest = tasks_view.latest_call_id(get_db(), task.id)
    return _task_page(task, workspace.result_form(task, call_id=latest or ""))


@bp.route("/tasks/<int:task_id>/result", methods=["POST"])
@allow("manager")
def file_result(task_id):
    task = load(Task, task_id)
    form = workspace.result_form(task)
    if not workspace.save_result(task.id, form):
        return _task_page(load(Task, task_id), form)
    flash(gettext("The result is saved."), "success")
    return redirect(url_for(".home", tab=tasks_view.tab_of(load(Task, task_id))))
