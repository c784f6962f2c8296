"""The manager's workspace (工作台): the task list with tabs, a task's page
(customer, script, calls, the result form), and two small JSON endpoints
the page script polls: due call-backs (reminders) and the next task for
progressive dial (自动连拨).

Live call progress: the page script polls GET /calls/<id> (webui.calls)
about once a second while a call is on, and stops when it ends. Polling,
not server-sent events: waitress serves with 8 threads, and an SSE stream
holds one for as long as it is open, so 8 managers on a call would stall
the site; a poll is one short indexed read, so hundreds of managers on
calls cost a few hundred milliseconds of one thread per second.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import BooleanField, DateTimeLocalField, HiddenField, SelectField, TextAreaField
from wtforms.validators import Optional

from khhf.models import Call, Feedback, Manager, ResultCode, Task, User, utcnow
from khhf.services import campaigns, dial_rules, results, tasks, workspace
from khhf.services.trunk import PAUSE_POLL_SECONDS
from webui import trunk
from webui.access import allow, client_ip, load
from webui.calls import progress_label
from webui.db import get_db, writing
from webui.forms import DutyForm, _int_or_none
from webui.i18n import TASK_STATUS_LABELS, group_extension, task_type_name, zone_name

bp = Blueprint("workspace", __name__, url_prefix="/manager")
# the notice manager/_trunk.html shows on the desk and phone pages
bp.add_app_template_global(trunk.notice, "trunk_notice")

TAB_LABELS = {
    "todo": _l("Not called yet"),
    "callback": _l("Call-backs"),
    "connected": _l("Connected, result due"),
    "not_reached": _l("Not reached"),
    "done": _l("Done"),
}
MAX_SEARCH = 64


def settings():
    return current_app.extensions["khhf_settings"]


def own_manager() -> Manager:
    # scope(Manager) for a manager is Manager.user_id == the user's id: the
    # user's own manager row, loaded with the user (webui._load_user), so
    # this costs no query
    manager = current_user.manager if current_user.role == "manager" else None
    if manager is None:
        abort(404)  # a manager user without a manager row: an admin must fix it
    return manager


def list_args() -> tuple[str, str, str | None]:
    """(tab, search, cursor) from the query string, each checked (400 if bad)."""
    tab = request.args.get("tab", "todo")
    if tab not in workspace.TABS:
        abort(400, gettext("There is no such tab: choose one of the tabs above."))
    search = request.args.get("q", "").strip()
    if len(search) > MAX_SEARCH:
        abort(400, gettext("The search is too long: at most %(max)s characters.",
                           max=MAX_SEARCH))
    after = request.args.get("after") or None
    if after is not None:
        try:
            workspace.parse_cursor(after, tab)
        except workspace.BadCursor:
            abort(400, gettext("The page link is damaged: go back to the first page."))
    return tab, search, after


def task_list(manager: Manager, size: int = workspace.PAGE_SIZE):
    """(tab, search, cursor, counts, page) of the manager's task list, on the
    desktop or the phone. A search looks in every tab: each tab counts the
    tasks that match, and the search form (which names no tab) shows the
    first tab that holds a match; a tab the manager picks is shown as picked."""
    tab, search, after = list_args()
    session = get_db()
    counts = workspace.counts(session, manager.id, search)
    if search and "tab" not in request.args and not counts[tab]:
        tab = next((t for t in workspace.TABS if counts[t]), tab)
    listing = workspace.page(session, manager.id, tab, search, after, size=size)
    return tab, search, after, counts, listing


def home_page(manager: Manager):
    """The manager's home: tabs with counts, a page of tasks, recent calls."""
    tab, search, after, counts, listing = task_list(manager)
    session = get_db()
    calls = session.scalars(select(Call).where(Call.manager_id == manager.id)
                            .order_by(Call.id.desc()).limit(10)).all()
    desk_names = _desk_names(session, manager, calls)
    # labels and flags once per page, not once per row: the task table is the hot loop
    now = utcnow()
    return render_template(
        "manager/home.html", manager=manager, tab=tab, search=search, after=after,
        tabs=workspace.TABS, tab_labels=TAB_LABELS,
        counts=counts, listing=listing, calls=calls,
        desk_names=desk_names, duty_form=DutyForm(),
        overdue={t.id for t in listing.tasks if workspace.is_overdue(t, now)},
        status_labels={k: str(v) for k, v in TASK_STATUS_LABELS.items()},
        type_names={t.task_type_id: task_type_name(t.task_type) for t in listing.tasks})


def _desk_names(session, manager: Manager, calls) -> dict[str, str]:
    """Who answered the hotline calls among `calls` in the group: desk
    extension -> the colleague's name, only for the extensions those calls
    name (not the whole county's desk phones on every page load)."""
    extensions = {group_extension(c) for c in calls} - {None}
    if not extensions:
        return {}
    return dict(session.execute(
        select(Manager.desk_extension, User.display_name).join(User).where(
            Manager.county_id == manager.county_id,
            Manager.desk_extension.in_(sorted(extensions)))).all())


class ResultForm(FlaskForm):
    # no result is chosen for the manager: "— choose —" first, None until chosen
    result_code = SelectField(_l("Result"), coerce=_int_or_none, validate_choice=False)
    note = TextAreaField(_l("Note"))
    appointment_at = DateTimeLocalField(_l("Call back at"), format="%Y-%m-%dT%H:%M",
                                        validators=[Optional()])
    # shown while the task's call is still on: a result filed mid-call needs it
    while_live = BooleanField(_l("Save while the call is on"))
    call_id = HiddenField()
    autodial = HiddenField()


def result_form(task: Task, **kwargs) -> ResultForm:
    """The result form with the task type's result codes as its choices,
    after an empty "— choose the result —" (the phone pages list only the codes)."""
    form = ResultForm(**kwargs)
    # the site's zone is known per request, not when the class is made
    form.appointment_at.description = gettext("Optional: a time to call again (%(zone)s).",
                                              zone=zone_name(settings().timezone))
    form.result_code.choices = [("", gettext("— choose the result —"))] + [
        (c.id, f"{c.code} {c.label}") for c in task.task_type.result_codes]
    return form


def _task_page(task: Task, form: ResultForm):
    session = get_db()
    calls = workspace.task_calls(session, task.id)
    feedback = session.execute(
        select(Feedback, ResultCode).join(ResultCode, ResultCode.id == Feedback.result_code_id)
        .where(Feedback.task_id == task.id).order_by(Feedback.id.desc())).all()
    live = workspace.live_call(session, task.id)
    script = campaigns.script_for(task.task_type, current_user.display_name)
    # a result the system filed (an unreached call) may be corrected, even a closing one
    system = results.system_result(session, task) if task.status != tasks.CANCELLED else None
    return render_template("manager/task.html", task=task, calls=calls, feedback=feedback,
                           form=form, live=live, script=script, tab=workspace.tab_of(task),
                           tab_labels=TAB_LABELS, system=system,
                           is_open=task.status in tasks.OPEN or system is not None,
                           overdue=workspace.is_overdue(task),
                           progress_label=progress_label)


@bp.route("/tasks/<int:task_id>")
@allow("manager")
def task(task_id):
    task = load(Task, task_id)
    latest = workspace.latest_call_id(get_db(), task.id)
    return _task_page(task, result_form(task, call_id=latest or ""))


def save_result(task_id: int, form: ResultForm) -> bool:
    """File the submitted result form for the task (khhf.services.results,
    one writing unit of work). False, nothing written, with the problems on
    the form, when it is refused. The phone pages (webui.mobile) use it too."""
    if not form.validate_on_submit():
        return False
    appointment = form.appointment_at.data
    call_id = form.call_id.data
    with writing(form) as w:
        results.file_result(
            w.session, current_user, task_id, form.result_code.data, form.note.data or "",
            settings().from_local(appointment) if appointment else None,
            channel="web", call_id=int(call_id) if call_id and call_id.isdigit() else None,
            settings=settings(), ip=client_ip(), while_live=bool(form.while_live.data))
    return w.saved


@bp.route("/tasks/<int:task_id>/result", methods=["POST"])
@allow("manager")
def file_result(task_id):
    task = load(Task, task_id)
    form = result_form(task)
    if not save_result(task.id, form):
        return _task_page(load(Task, task_id), form)
    flash(gettext("The result is saved."), "success")
    if form.autodial.data == "1":
        return redirect(url_for("manager.home", autodial="1"))
    return redirect(url_for("manager.home"))


@bp.route("/next")
@allow("manager")
def next_task():
    """JSON for progressive dial: the next due task, or why there is none."""
    manager = own_manager()
    now = utcnow()
    if not dial_rules.in_calling_window(settings(), now):
        return jsonify(task=None, reason="window", message=gettext(
            "Progressive dial stopped: calls are only placed between %(window)s "
            "(%(zone)s).", window=settings().calling_window, zone=zone_name(settings().timezone)))
    if trunk.status().down:
        # a dead line must not burn through the list: wait, ask again
        return jsonify(task=None, reason="trunk", retry_seconds=PAUSE_POLL_SECONDS,
                       message=trunk.notice())
    task = workspace.next_due(get_db(), manager.id, now, settings=settings())
    if task is None:
        return jsonify(task=None, reason="end", message=gettext(
            "Progressive dial stopped: no task is due now."))
    return jsonify(task={"id": task.id, "name": task.customer.name or task.customer.phone[-4:],
                         "url": url_for(".task", task_id=task.id),
                         "dial_url": url_for("calls.dial", task_id=task.id)},
                   reason=None, message=gettext("Calling %(name)s in a moment…",
                                                name=task.customer.name or "—"))


@bp.route("/reminders")
@allow("manager")
def reminders():
    """JSON: the manager's call-backs whose time has come (the page's reminder)."""
    manager = own_manager()
    now = utcnow()
    due = workspace.due_callbacks(get_db(), manager.id, now)
    return jsonify(due=[{
        "id": t.id, "name": t.customer.name or "—",
        "at": f"{settings().local(t.appointment_at):%Y-%m-%d %H:%M}",
        "overdue": workspace.is_overdue(t, now),
        "url": url_for(".task", task_id=t.id)} for t in due])
