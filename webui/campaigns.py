"""Campaigns (批次), their distribution and progress; task types and result codes.

Administrators see every county's campaigns, supervisors their own county's
(webui.access.scope); task types are the administrators'. The forms live
here, next to the only views that use them.
"""

from __future__ import annotations

from flask import Blueprint, abort, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import (
    BooleanField,
    FieldList,
    Form,
    FormField,
    HiddenField,
    SelectChoice,
    SelectField,
    SelectMultipleField,
    StringField,
    TextAreaField,
)
from wtforms.widgets import CheckboxInput, ListWidget

from khhf.calls.states import UNREACHED_OUTCOMES
from khhf.models import Campaign, County, Manager, Task, TaskKind, TaskType
from khhf.services import ValidationError, campaigns, distribution, exports, lookups, parse_int
from webui import i18n, params
from webui.access import allow, client_ip, load, scope
from webui.db import get_db, writing
from webui.exports import audited_download
from webui.forms import ConfirmForm, county_choices, county_field, manager_choices, show_problems

bp = Blueprint("campaigns", __name__, url_prefix="/campaigns")

CYCLE_LABELS = i18n.CAMPAIGN_CYCLE_LABELS
STATUS_LABELS = i18n.CAMPAIGN_STATUS_LABELS
SELECTION_LABELS = i18n.CAMPAIGN_SELECTION_LABELS
TASKS_PAGE = 200


@bp.context_processor
def _labels():
    return {"CYCLE_LABELS": CYCLE_LABELS, "STATUS_LABELS": STATUS_LABELS,
            "SELECTION_LABELS": SELECTION_LABELS}


class _Checkboxes(SelectMultipleField):
    widget = ListWidget(prefix_label=False)
    option_widget = CheckboxInput()


class CampaignForm(FlaskForm):
    name = StringField(_l("Campaign name"))
    county_id = county_field()
    task_type_id = SelectField(_l("Task type"), coerce=str, validate_choice=False)
    cycle = SelectField(_l("Cycle"), validate_choice=False,
                        choices=[SelectChoice(k, v) for k, v in CYCLE_LABELS.items()],
                        description=_l("A weekly or monthly campaign makes a new round of "
                                       "tasks at the start of each week or month."))
    starts_on = StringField(_l("First day"), render_kw={"type": "date"})
    ends_on = StringField(_l("Last day"), render_kw={"type": "date"},
                          description=_l("Empty: a weekly or monthly campaign runs until "
                                         "closed."))
    selection = SelectField(_l("Customers called"), validate_choice=False,
                            choices=[SelectChoice(k, v) for k, v in SELECTION_LABELS.items()],
                            description=_l("Customers on the do-not-call list are never "
                                           "called. An imported list: import the tasks with "
                                           "the campaign's id."))
    manager_ids = _Checkboxes(_l("Managers whose customers are called"), coerce=str,
                              validate_choice=False)


class DistributeForm(FlaskForm):
    mode = SelectField(_l("Distribution"), validate_choice=False, choices=[
        SelectChoice("average", _l("Average (equal counts over the chosen managers)")),
        SelectChoice("auto", _l("Automatic (each customer's own manager, the rest to the "
                                "least loaded)"))])
    manager_ids = _Checkboxes(_l("Managers (average only; none chosen: all active)"),
                              coerce=str, validate_choice=False)


class ReassignForm(FlaskForm):
    manager_id = SelectField(_l("Give the selected tasks to"), coerce=str,
                             validate_choice=False)


class ResultCodeRow(Form):
    code = StringField(_l("Code"))
    label = StringField(_l("Label"))
    is_success = BooleanField(_l("Success"))
    is_final = BooleanField(_l("Final"))
    stops_calls = BooleanField(_l("No more calls"))


class OutcomeRuleRow(Form):
    """One unreached outcome's automatic result (the outcome is the row's place)."""
    outcome = HiddenField()
    code = StringField(_l("Result code"))
    retry_minutes = StringField(_l("Call again after (minutes)"))
    max_retries = StringField(_l("At most (times)"))
    close_code = StringField(_l("Then close with"))


class TaskTypeForm(FlaskForm):
    code = StringField(_l("Code"), description=_l("Short Latin name, e.g. revisit."))
    name = StringField(_l("Task type name"))
    description = StringField(_l("Description"))
    script = TextAreaField(_l("Call script"), render_kw={"rows": 4},
                           description=_l("Shown to the manager next to each task."))
    # a string: a bad number is the service's to report, with the other problems
    max_attempts = StringField(_l("Max attempts"), default="3")
    kind = SelectField(_l("Kind"), choices=[SelectChoice(k.value, i18n.TASK_KIND_LABELS[k])
                                            for k in TaskKind],
                       default=TaskKind.REVISIT.value, validate_choice=False)
    requires_consent = BooleanField(
        _l("Requires consent"), description=_l("Its calls ring only customers who consented to "
                                               "such calls (not for return visits)."))
    codes = FieldList(FormField(ResultCodeRow), label=_l("Result codes"), min_entries=10)
    rules = FieldList(FormField(OutcomeRuleRow), label=_l("Automatic outcomes"))


def _rule_rows(task_type: TaskType | None) -> list[dict]:
    """The form's rows of automatic outcomes: one per unreached outcome, in order."""
    have = {r.outcome: campaigns.rule_fields(r) for r in (task_type.outcome_rules
                                                          if task_type else [])}
    return [{**{"code": "", "retry_minutes": "", "max_retries": "", "close_code": ""},
             **have.get(o, {}), "outcome": str(o)} for o in UNREACHED_OUTCOMES]


# -- campaigns -----------------------------------------------------------------

def _managers(county_id):
    """The county's active managers, as a campaign's pick lists offer them."""
    return lookups.managers(get_db(), county_id=county_id, active_only=True)


def _campaign_form(campaign=None) -> CampaignForm:
    form = CampaignForm(obj=campaign)
    counties = lookups.counties(get_db(), scope(County))
    form.county_id.choices = county_choices(counties)
    form.task_type_id.choices = [SelectChoice(str(t.id), t.name)
                                 for t in lookups.task_types(get_db())]
    county_id = form.county_id.data or (campaign.county_id if campaign else None) \
        or current_user.county_id or (counties[0].id if counties else None)
    # every county's managers are offered; the service refuses another county's
    form.manager_ids.choices = manager_choices(
        lookups.managers(get_db(), scope(Manager), active_only=True), with_county=True)
    if request.method == "GET":
        if campaign is not None:
            form.task_type_id.data = str(campaign.task_type_id)
            form.starts_on.data = campaign.starts_on.isoformat()
            form.ends_on.data = campaign.ends_on.isoformat() if campaign.ends_on else ""
            form.manager_ids.data = [str(m.id) for m in campaign.managers]
        else:
            form.county_id.data = county_id
            form.starts_on.data = current_app.extensions["khhf_settings"].today().isoformat()
    return form


def _campaign_fields(form) -> dict:
    return {"county_id": form.county_id.data, "task_type_id": form.task_type_id.data,
            "name": form.name.data, "cycle": form.cycle.data, "starts_on": form.starts_on.data,
            "ends_on": form.ends_on.data or None, "selection": form.selection.data,
            "manager_ids": form.manager_ids.data or []}


@bp.route("/")
@allow("admin", "supervisor")
def index():
    db = get_db()
    rows = db.scalars(select(Campaign).where(scope(Campaign))
                      .order_by(Campaign.status, Campaign.id.desc())).all()
    progress = campaigns.progress(db, [c.id for c in rows])
    return render_template("campaigns/index.html", campaigns=rows, progress=progress)


@bp.route("/new", methods=["GET", "POST"])
@allow("admin", "supervisor")
def new():
    form = _campaign_form()
    if form.validate_on_submit():
        with writing(form) as w:
            campaign = campaigns.create_campaign(w.session, current_user, client_ip(),
                                                 **_campaign_fields(form))
        if w.saved:
            flash(gettext("Campaign %(name)s created as a draft: check it, then start it.",
                          name=campaign.name), "success")
            return redirect(url_for(".show", campaign_id=campaign.id))
    return render_template("campaigns/form.html", form=form, campaign=None)


@bp.route("/<int:campaign_id>")
@allow("admin", "supervisor")
def show(campaign_id):
    campaign = load(Campaign, campaign_id)
    db = get_db()
    progress = campaigns.progress(db, [campaign.id])[campaign.id]
    names = lookups.manager_names(db, [r["manager_id"] for r in progress["rows"]])
    cycles = db.execute(select(campaigns.CampaignCycle).where(
        campaigns.CampaignCycle.campaign_id == campaign.id)
        .order_by(campaigns.CampaignCycle.seq.desc()).limit(12)).scalars().all()
    return render_template("campaigns/show.html", campaign=campaign, progress=progress,
                           names=names, cycles=cycles, action_form=ConfirmForm(),
                           next_round=campaigns.next_round(db, campaign),
                           distributing=distribution.unfinished(db, campaign.id))


@bp.route("/<int:campaign_id>/edit", methods=["GET", "POST"])
@allow("admin", "supervisor")
def edit(campaign_id):
    campaign = load(Campaign, campaign_id)
    form = _campaign_form(campaign)
    if form.validate_on_submit():
        with writing(form) as w:
            campaigns.update_campaign(w.session, current_user, client_ip(), campaign,
                                      **_campaign_fields(form))
        if w.saved:
            flash(gettext("Campaign %(name)s saved.", name=campaign.name), "success")
            return redirect(url_for(".show", campaign_id=campaign.id))
    return render_template("campaigns/form.html", form=form, campaign=campaign)


@bp.route("/<int:campaign_id>/activate", methods=["POST"])
@allow("admin", "supervisor")
def activate(campaign_id):
    campaign = load(Campaign, campaign_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        with writing(form) as w:
            made = campaigns.activate(w.session, current_user, client_ip(), campaign,
                                      current_app.extensions["khhf_settings"].today())
        if w.saved:
            flash(gettext("Campaign started: %(count)s tasks made.", count=made), "success")
    return redirect(url_for(".show", campaign_id=campaign.id))


@bp.route("/<int:campaign_id>/close", methods=["POST"])
@allow("admin", "supervisor")
def close(campaign_id):
    campaign = load(Campaign, campaign_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        with writing(form) as w:
            campaigns.close(w.session, current_user, client_ip(), campaign)
        if w.saved:
            flash(gettext("Campaign closed: no more rounds; open tasks can still be worked."),
                  "success")
    return redirect(url_for(".show", campaign_id=campaign.id))


@bp.route("/<int:campaign_id>/distribute", methods=["GET", "POST"])
@allow("admin", "supervisor")
def distribute(campaign_id):
    campaign = load(Campaign, campaign_id)
    db = get_db()
    form = DistributeForm()
    form.manager_ids.choices = manager_choices(_managers(campaign.county_id))
    preview = None
    if form.validate_on_submit():
        ids = [i for i in map(parse_int, form.manager_ids.data or []) if i]
        if form.mode.data != "average":
            ids = []
        if request.form.get("action") == "commit":
            with writing(form) as w:
                plan = distribution.commit(w.session, current_user, client_ip(), campaign,
                                           form.mode.data, ids)
            if w.saved and plan.run_id is not None:
                # a large one: a transaction per chunk (a stopped one is
                # finished by the jobs daemon)
                done, chunk_cache = False, {}
                while not done:
                    with writing() as chunk:
                        done = distribution.apply_chunk(chunk.session, plan.run_id,
                                                        cache=chunk_cache)
            if w.saved:
                flash(gettext("Distribution saved: %(moved)s of %(total)s tasks moved.",
                              moved=plan.moved, total=plan.total), "success")
                return redirect(url_for(".show", campaign_id=campaign.id))
        else:
            try:
                preview = distribution.plan(db, campaign, form.mode.data, ids)
            except ValidationError as error:
                show_problems(form, error)
    return render_template("campaigns/distribute.html", campaign=campaign, form=form,
                           preview=preview)


@bp.route("/<int:campaign_id>/tasks", methods=["GET", "POST"])
@allow("admin", "supervisor")
@params.query(manager=params.Id(_l("Customer manager")),
              after=params.Id(_l("Page")))
def task_list(campaign_id, manager, after):
    campaign = load(Campaign, campaign_id)
    db = get_db()
    form = ReassignForm()
    managers = _managers(campaign.county_id)
    form.manager_id.choices = manager_choices(managers)
    if form.validate_on_submit():
        chosen = request.form.getlist("task_ids")
        with writing(form) as w:
            moved = distribution.reassign(w.session, current_user, client_ip(), campaign,
                                          chosen, form.manager_id.data)
        if w.saved:
            flash(gettext("%(count)s tasks reassigned.", count=moved), "success")
            return redirect(request.full_path)
    manager_id = manager
    query = select(Task).where(Task.campaign_id == campaign.id, Task.id > (after or 0))
    if manager_id:
        query = query.where(Task.manager_id == manager_id)
    rows = db.scalars(query.order_by(Task.id).limit(TASKS_PAGE)).all()
    names = lookups.manager_names(db, [t.manager_id for t in rows])
    return render_template("campaigns/tasks.html", campaign=campaign, form=form, tasks=rows,
                           names=names, managers=managers, manager_id=manager_id,
                           next_after=rows[-1].id if len(rows) == TASKS_PAGE else None)


@bp.route("/<int:campaign_id>/tasks/export.<any(xlsx, csv):fmt>", methods=["POST"])
@allow("admin", "supervisor")
def export_tasks(campaign_id, fmt):
    """The campaign's tasks with status and result, whole numbers; audited."""
    def build(reading):
        campaign = load(Campaign, campaign_id, reading)
        local = exports.local_time(current_app.extensions["khhf_settings"])
        table = exports.task_table(reading, campaign, gettext, local,
                                   lambda code: i18n.label(i18n.TASK_STATUS_LABELS, code))
        return [table], {"kind": "tasks", "campaign": campaign}
    return audited_download(fmt, build)


# -- task types --------------------------------------------------------------------

@bp.route("/types")
@allow("admin")
def types():
    return render_template("campaigns/types.html", types=lookups.task_types(get_db()))


def _type_fields(form) -> dict:
    return {"code": form.code.data, "name": form.name.data,
            "description": form.description.data, "script": form.script.data,
            "max_attempts": form.max_attempts.data, "kind": form.kind.data,
            "requires_consent": form.requires_consent.data,
            "codes": [row.data for row in form.codes],
            "rules": [row.data for row in form.rules]}


@bp.route("/types/new", methods=["GET", "POST"])
@allow("admin")
def type_new():
    form = TaskTypeForm() if request.method == "POST" else TaskTypeForm(rules=_rule_rows(None))
    if form.validate_on_submit():
        with writing(form) as w:
            campaigns.save_task_type(w.session, current_user, client_ip(), None,
                                     **_type_fields(form))
        if w.saved:
            flash(gettext("Task type %(name)s added.", name=form.name.data.strip()), "success")
            return redirect(url_for(".types"))
    return render_template("campaigns/type_form.html", form=form, task_type=None)


@bp.route("/types/<int:type_id>", methods=["GET", "POST"])
@allow("admin")
def type_edit(type_id):
    task_type = get_db().get(TaskType, type_id)
    if task_type is None:
        abort(404)
    if request.method == "GET":
        form = TaskTypeForm(obj=task_type, max_attempts=str(task_type.max_attempts), codes=[
            {"code": c.code, "label": c.label, "is_success": c.is_success,
             "is_final": c.is_final, "stops_calls": c.stops_calls}
            for c in sorted(task_type.result_codes, key=lambda c: c.code.zfill(2))],
            rules=_rule_rows(task_type))
        while len(form.codes) < max(10, len(task_type.result_codes) + 3):
            form.codes.append_entry()
    else:
        form = TaskTypeForm()
    if form.validate_on_submit():
        with writing(form) as w:
            campaigns.save_task_type(w.session, current_user, client_ip(), task_type,
                                     **_type_fields(form))
        if w.saved:
            flash(gettext("Task type %(name)s saved.", name=task_type.name), "success")
            return redirect(url_for(".types"))
    return render_template("campaigns/type_form.html", form=form, task_type=task_type)


def county_progress(county_id: int) -> tuple[list, dict, dict]:
    """The supervisor's home: the county's active campaigns and their progress."""
    db = get_db()
    rows = db.scalars(select(Campaign).where(Campaign.county_id == county_id,
                                             Campaign.status == "active")
                      .order_by(Campaign.id.desc())).all()
    progress = campaigns.progress(db, [c.id for c in rows])
    names = lookups.manager_names(db, [r["manager_id"] for p in progress.values()
                                       for r in p["rows"]])
    return rows, progress, names
