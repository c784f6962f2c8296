"""Administration: counties and their unified-number pools, users, managers,
the do-not-call register, and the integration API's clients."""

from __future__ import annotations

import datetime as dt
import tempfile
from pathlib import Path

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf import FlaskForm
from flask_wtf.file import FileField
from sqlalchemy import func, select
from werkzeug.utils import secure_filename
from wtforms import BooleanField, DateField, SelectChoice, StringField
from wtforms.validators import Optional

from khhf import webhooks
from khhf.i18n import NUMBER_STATE_LABELS, label
from khhf.models import (
    ApiClient,
    ApiOperation,
    AuditLog,
    County,
    DncChannel,
    DncEntry,
    Manager,
    NumberState,
    User,
    WebhookDelivery,
    utcnow,
)
from khhf.names import by_pinyin
from khhf.services import (
    ValidationError,
    accounts,
    api_clients,
    counties,
    dnc,
    imports,
    lookups,
    number_pool,
    parse_int,
)
from webui import params, security
from webui.access import allow, client_ip, load
from webui.db import get_db, writing
from webui.forms import (
    ApiClientForm,
    ConfirmForm,
    CountyForm,
    ManagerForm,
    NumberAddForm,
    NumberCapsForm,
    NumberStateForm,
    PasswordForm,
    UserForm,
    county_choices,
    manager_choices,
    show_problems,
)
from webui.i18n import ROLE_LABELS

bp = Blueprint("admin", __name__, url_prefix="/admin")
# the users list: administrators first, then supervisors, then managers
ROLE_ORDER = ("admin", "supervisor", "manager")


@bp.route("/")
@allow("admin")
def index():
    db = get_db()
    counts = {
        "counties": db.scalar(select(func.count()).select_from(County)),
        "users": db.scalar(select(func.count()).select_from(User).where(User.is_active)),
        "managers": db.scalar(select(func.count()).select_from(Manager)
                              .where(Manager.status == "active")),
        "on_duty": db.scalar(select(func.count()).select_from(Manager)
                             .where(Manager.status == "active", Manager.on_duty)),
    }
    recent = db.scalars(select(AuditLog).order_by(AuditLog.id.desc()).limit(8)).all()
    return render_template("admin/index.html", counts=counts, recent=recent)


# -- counties ---------------------------------------------------------------

@bp.route("/counties")
@allow("admin")
def counties_list():
    return render_template("admin/counties.html", counties=lookups.counties(get_db()),
                           delete_form=ConfirmForm())


@bp.route("/counties/new", methods=["GET", "POST"])
@allow("admin")
def county_new():
    form = CountyForm()
    if form.validate_on_submit():
        with writing(form) as w:
            counties.create_county(w.session, current_user, client_ip(), **_county_fields(form))
        if w.saved:
            flash(gettext("County %(name)s added.", name=form.name.data.strip()), "success")
            return redirect(url_for(".counties_list"))
    return render_template("admin/county_form.html", form=form, county=None)


@bp.route("/counties/<int:county_id>", methods=["GET", "POST"])
@allow("admin")
def county_edit(county_id):
    county = load(County, county_id)
    form = CountyForm(obj=county)
    if request.method == "GET":
        form.numbers.data = "\n".join(n.number for n in county.unified_numbers)
        form.primary.data = county.primary_number or ""
    if form.validate_on_submit():
        with writing(form) as w:
            counties.update_county(w.session, current_user, client_ip(), county,
                                   **_county_fields(form))
        if w.saved:
            flash(gettext("County %(name)s saved.", name=county.name), "success")
            return redirect(url_for(".counties_list"))
    return render_template("admin/county_form.html", form=form, county=county)


@bp.route("/counties/<int:county_id>/delete", methods=["POST"])
@allow("admin")
def county_delete(county_id):
    county = load(County, county_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        name = county.name
        with writing(form) as w:
            counties.delete_county(w.session, current_user, client_ip(), county)
        if w.saved:
            flash(gettext("County %(name)s removed.", name=name), "success")
    return redirect(url_for(".counties_list"))


# -- a county's unified-number pool (统一号码池) -------------------------------

REPORT_DAYS = 7   # the pool page's report: the last week, today included


@bp.route("/counties/<int:county_id>/numbers", methods=["GET", "POST"])
@allow("admin")
def numbers(county_id):
    """The pool's page; a POST adds a number to it."""
    county = load(County, county_id)
    form = NumberAddForm()
    if request.method == "POST" and form.validate_on_submit():
        with writing(form) as w:
            row = number_pool.add_number(w.session, current_user, client_ip(),
                                         current_app.extensions["khhf_settings"], county,
                                         form.number.data or "", **_caps(form))
        if w.saved:
            flash(gettext("Unified number %(number)s added.", number=row.number), "success")
            return redirect(url_for(".numbers", county_id=county.id))
    return _numbers_page(county, form)


@bp.route("/counties/<int:county_id>/numbers/state", methods=["POST"])
@allow("admin")
def number_state(county_id):
    county = load(County, county_id)
    form = NumberStateForm()
    row = _pool_number(county, form.number.data)
    if row is not None and form.validate_on_submit():
        with writing(form) as w:
            number_pool.set_state(w.session, current_user, client_ip(), row, form.state.data)
        if w.saved:
            flash(gettext("Unified number %(number)s is now: %(state)s.", number=row.number,
                          state=label(NUMBER_STATE_LABELS, row.state)), "success")
    return redirect(url_for(".numbers", county_id=county.id))


@bp.route("/counties/<int:county_id>/numbers/caps", methods=["POST"])
@allow("admin")
def number_caps(county_id):
    county = load(County, county_id)
    form = NumberCapsForm()
    row = _pool_number(county, form.number.data)
    if row is not None and form.validate_on_submit():
        with writing(form) as w:
            number_pool.set_caps(w.session, current_user, client_ip(), row, **_caps(form))
        if w.saved:
            flash(gettext("Caps of %(number)s saved.", number=row.number), "success")
    return redirect(url_for(".numbers", county_id=county.id))


def _caps(form) -> dict:
    return {cap: getattr(form, cap).data for cap in number_pool.CAPS
            if (getattr(form, cap).data or "").strip()}


def _pool_number(county, number):
    """The county's own pool row for `number`; None, said on the page, if it has none."""
    row = next((n for n in county.unified_numbers if n.number == number), None)
    if row is None:
        flash(gettext("%(value)s is not a unified number of %(county)s.", value=number or "—",
                      county=county.name), "danger")
    return row


def _numbers_page(county, add_form):
    db, settings = get_db(), current_app.extensions["khhf_settings"]
    now = utcnow()
    last = settings.local(now).date()
    days = [last - dt.timedelta(days=k) for k in range(REPORT_DAYS)]
    report = number_pool.by_day(db, settings, county, days[-1], last)
    pool = number_pool.pool(db, settings, county, now)
    return render_template(
        "admin/numbers.html", county=county, pool=pool, add_form=add_form,
        state_form=NumberStateForm(), caps_forms={r.number.number: NumberCapsForm(
            formdata=None, obj=r.number) for r in pool},
        warnings=number_pool.warnings(db, settings, county, now), settings=settings,
        days=days, report=report, states=list(NumberState))


def _county_fields(form) -> dict:
    return {"code": form.code.data, "name": form.name.data,
            "fallback_strategy": form.fallback_strategy.data,
            "numbers": counties.parse_numbers(form.numbers.data),
            "primary": form.primary.data}


# -- users ------------------------------------------------------------------

@bp.route("/users")
@allow("admin")
def users_list():
    users = sorted(by_pinyin(get_db().scalars(select(User)), lambda u: u.display_name),
                   key=lambda u: ROLE_ORDER.index(u.role))
    return render_template("admin/users.html", users=users)


@bp.route("/users/new", methods=["GET", "POST"])
@allow("admin")
def user_new():
    form = UserForm()
    form.county_id.choices = county_choices(lookups.counties(get_db()),
                                            gettext("— none (administrators) —"))
    del form.is_active
    if form.validate_on_submit():
        with writing(form) as w:
            user = accounts.create_user(
                w.session, current_user, client_ip(), username=form.username.data,
                display_name=form.display_name.data, password=form.password.data,
                role=form.role.data, county_id=form.county_id.data)
            accounts.set_desk_extension(w.session, current_user, client_ip(), user,
                                        form.desk_extension.data)
        if w.saved:
            flash(gettext("User %(username)s added.", username=form.username.data.strip()),
                  "success")
            return redirect(url_for(".users_list"))
    return render_template("admin/user_form.html", form=form, user=None)


@bp.route("/users/<int:user_id>", methods=["GET", "POST"])
@allow("admin")
def user_edit(user_id):
    user = load(User, user_id)
    form = _user_edit_form(user)
    if form.validate_on_submit():
        with writing(form) as w:
            accounts.update_user(
                w.session, current_user, client_ip(), user, display_name=form.display_name.data,
                role=form.role.data, county_id=form.county_id.data,
                is_active=form.is_active.data)
            if form.desk_extension is not None:  # a manager's is on the manager's page
                accounts.set_desk_extension(w.session, current_user, client_ip(), user,
                                            form.desk_extension.data)
        if w.saved:
            flash(gettext("User %(username)s saved.", username=user.username), "success")
            return redirect(url_for(".users_list"))
    return render_template("admin/user_form.html", form=form, user=user,
                           password_form=PasswordForm(formdata=None))


@bp.route("/users/<int:user_id>/password", methods=["POST"])
@allow("admin")
def user_password(user_id):
    user = load(User, user_id)
    form = PasswordForm()
    if form.validate_on_submit():
        with writing(form) as w:
            accounts.set_password(w.session, current_user, client_ip(), user, form.password.data)
        if w.saved:
            if user.id == current_user.id:
                security.keep_session(user)  # their other sessions end, this one goes on
            flash(gettext("Password of %(username)s changed.", username=user.username),
                  "success")
            return redirect(url_for(".user_edit", user_id=user.id))
    return render_template("admin/user_form.html", form=_user_edit_form(user, formdata=None),
                           user=user, password_form=form)


def _user_edit_form(user, **kwargs) -> UserForm:
    form = UserForm(obj=user, **kwargs)
    form.county_id.choices = county_choices(lookups.counties(get_db()),
                                            gettext("— none (administrators) —"))
    if user.role == "manager":
        form.role.choices = [SelectChoice("manager", ROLE_LABELS["manager"])]
        del form.desk_extension  # a manager's is set on the manager's page
    del form.username, form.password
    return form


# -- managers ---------------------------------------------------------------

@bp.route("/managers")
@allow("admin")
@params.query(county=params.Id(_l("County")))
def managers_list(county):
    return render_template("admin/managers.html",
                           managers=lookups.managers(get_db(), county_id=county),
                           counties=lookups.counties(get_db()), county_id=county)


@bp.route("/managers/new", methods=["GET", "POST"])
@allow("admin")
def manager_new():
    form = ManagerForm()
    form.county_id.choices = county_choices(lookups.counties(get_db()))
    del form.status, form.successor
    if form.validate_on_submit():
        with writing(form) as w:
            accounts.create_manager(
                w.session, current_user, client_ip(), username=form.username.data,
                display_name=form.display_name.data, password=form.password.data,
                county_id=form.county_id.data, employee_no=form.employee_no.data,
                desk_extension=form.desk_extension.data, mobile=form.mobile.data)
        if w.saved:
            flash(gettext("Customer manager %(name)s added.",
                          name=form.display_name.data.strip()), "success")
            return redirect(url_for(".managers_list"))
    return render_template("admin/manager_form.html", form=form, manager=None)


@bp.route("/managers/<int:manager_id>", methods=["GET", "POST"])
@allow("admin")
def manager_edit(manager_id):
    manager = load(Manager, manager_id)
    form = ManagerForm(obj=manager)
    if request.method == "GET":
        form.display_name.data = manager.user.display_name
    form.county_id.choices = county_choices(lookups.counties(get_db()))
    del form.username, form.password
    if manager.status == "active":
        form.successor.choices = _successor_choices(manager)
    else:
        del form.successor
    if form.validate_on_submit():
        with writing(form) as w:
            accounts.update_manager(
                w.session, current_user, client_ip(), manager,
                display_name=form.display_name.data, county_id=form.county_id.data,
                employee_no=form.employee_no.data, desk_extension=form.desk_extension.data,
                mobile=form.mobile.data, status=form.status.data,
                successor_id=form.successor.data if form.successor else None)
        if w.saved:
            flash(gettext("Customer manager %(name)s saved.", name=manager.user.display_name),
                  "success")
            return redirect(url_for(".managers_list"))
    return render_template("admin/manager_form.html", form=form, manager=manager)


def _successor_choices(manager: Manager) -> list[SelectChoice]:
    """Who may take over from `manager`: the county's other active managers,
    by the pinyin of their names; or nobody in particular (spread evenly)."""
    return manager_choices(
        lookups.managers(get_db(), county_id=manager.county_id, active_only=True,
                         except_id=manager.id),
        gettext("— spread evenly over the county's active managers —"))


# -- the integration API: clients and webhook deliveries ----------------------------------

DELIVERIES_SHOWN = 100


@bp.route("/api", methods=["GET", "POST"])
@allow("admin")
def api_clients_page():
    """API clients (create, revoke) and the latest webhook deliveries. A new
    client's token is shown on the answer to its creation, and never again."""
    form = ApiClientForm()
    form.county.choices = [SelectChoice(c.code, f"{c.name} ({c.code})")
                           for c in lookups.counties(get_db())]
    form.operations.choices = [SelectChoice(op.value, op.value) for op in ApiOperation]
    if request.method == "GET":
        form.operations.data = list(api_clients.DEFAULT_OPERATIONS)
    token = None
    if form.validate_on_submit():
        rate = parse_int(form.rate_per_minute.data, 0)
        try:
            with writing() as w:
                client, token = api_clients.create(
                    w.session, current_user, client_ip(), name=form.name.data or "",
                    county_code=form.county.data or "", operations=form.operations.data or [],
                    allowed_addresses=form.allowed_addresses.data or "",
                    webhook_url=form.webhook_url.data or "", rate_per_minute=rate)
        except ValidationError as error:
            show_problems(form, error)
        else:
            flash(gettext("API client %(name)s added. Copy its token now: it is not shown "
                          "again.", name=client.name), "success")
    db = get_db()
    deliveries = db.scalars(select(WebhookDelivery).order_by(WebhookDelivery.id.desc())
                            .limit(DELIVERIES_SHOWN)).all()
    return render_template("admin/api.html", form=form, token=token,
                           clients=api_clients.all_clients(db),
                           counts={c.id: webhooks.counts(db, c.id)
                                   for c in api_clients.all_clients(db)},
                           deliveries=deliveries, confirm_form=ConfirmForm())


@bp.route("/api/<int:client_id>/revoke", methods=["POST"])
@allow("admin")
def api_client_revoke(client_id):
    client = load(ApiClient, client_id)
    if ConfirmForm().validate_on_submit():
        with writing() as w:
            api_clients.revoke(w.session, current_user, client_ip(),
                               w.session.get(ApiClient, client.id))
        flash(gettext("API client %(name)s revoked: its token no longer works.",
                      name=client.name), "success")
    return redirect(url_for(".api_clients_page"))


@bp.route("/api/deliveries/retry", methods=["POST"])
@allow("admin")
def api_deliveries_retry():
    """Put every failed webhook delivery back in the queue."""
    if ConfirmForm().validate_on_submit():
        with writing() as w:
            count = webhooks.retry(w.session, w.session.scalars(
                select(WebhookDelivery.id).where(WebhookDelivery.status == "failed")))
        flash(gettext("%(count)d failed deliveries queued again.", count=count), "success")
    return redirect(url_for(".api_clients_page"))
# -- the do-not-call register ---------------------------------------------------------

class DncAddForm(FlaskForm):
    number = StringField(_l("Phone"))
    listed_on = DateField(_l("Date listed"), validators=[Optional()])
    source = StringField(_l("Source"))
    reason = StringField(_l("Reason"))


class DncRemoveForm(FlaskForm):
    reason = StringField(_l("Reason"))


class DncImportForm(FlaskForm):
    file = FileField(_l("Spreadsheet (.xlsx or .csv)"))
    commit = BooleanField(_l("Write it (unticked: only check the file)"))


class _DryRun(Exception):
    """Rolls back a checked import (webui.db.writing rolls back, then this is caught)."""


def _dnc_page(add_form=None, import_form=None, remove_form=None, problems=(), status=200):
    q = request.args.get("q", "")[:32]
    return render_template("admin/dnc.html", entries=dnc.page(get_db(), q), q=q,
                           add_form=add_form or DncAddForm(formdata=None),
                           import_form=import_form or DncImportForm(formdata=None),
                           remove_form=remove_form or DncRemoveForm(formdata=None),
                           problems=problems), status


@bp.route("/dnc")
@allow("admin")
def dnc_list():
    return _dnc_page()


@bp.route("/dnc/add", methods=["POST"])
@allow("admin")
def dnc_add():
    form = DncAddForm()
    if form.validate_on_submit():
        with writing(form) as w:
            dnc.add(w.session, current_user, client_ip(), form.number.data or "",
                    channel=DncChannel.MANUAL, source=form.source.data or "",
                    reason=form.reason.data or "", listed_on=form.listed_on.data)
        if w.saved:
            flash(gettext("The number is on the do-not-call list: it will not be called."),
                  "success")
            return redirect(url_for(".dnc_list"))
    return _dnc_page(add_form=form)


@bp.route("/dnc/<int:entry_id>/remove", methods=["POST"])
@allow("admin")
def dnc_remove(entry_id):
    entry = load(DncEntry, entry_id)
    form = DncRemoveForm()
    if form.validate_on_submit():
        with writing(form) as w:
            dnc.remove(w.session, current_user, client_ip(), w.session.get(DncEntry, entry.id),
                       form.reason.data or "")
        if w.saved:
            flash(gettext("The number is off the do-not-call list: it may be called again."),
                  "success")
            return redirect(url_for(".dnc_list"))
    return _dnc_page(remove_form=form)


@bp.route("/dnc/import", methods=["POST"])
@allow("admin")
def dnc_import():
    """A file of numbers onto the register: checked, and written only when
    asked; all or nothing (khhf.services.dnc.import_file)."""
    form = DncImportForm()
    upload = request.files.get("file")
    if not form.validate_on_submit() or upload is None or not upload.filename:
        form.file.errors = [gettext("Choose the file to import.")]
        return _dnc_page(import_form=form)
    suffix = Path(upload.filename).suffix.lower()
    with tempfile.TemporaryDirectory(prefix="khhf-dnc-") as tmp:
        path = Path(tmp) / f"{secure_filename(Path(upload.filename).stem) or 'dnc'}{suffix}"
        upload.save(path)
        problems: list[str] = []
        try:
            with writing() as w:
                result = dnc.import_file(w.session, current_user, client_ip(), path)
                if not form.commit.data:
                    raise _DryRun
        except _DryRun:
            pass
        except imports.FileError as error:
            problems = [gettext(error.message, **error.params)]
        except dnc.Refused as error:
            problems = [gettext("Row %(row)s: %(problem)s", row=p.row,
                                problem=gettext(p.message, **p.params))
                        for p in error.problems]
    if problems:
        return _dnc_page(import_form=form, problems=problems, status=422)
    message = gettext("%(added)s numbers to add to the do-not-call list, %(already)s on it "
                      "already.", added=result.added, already=result.already)
    flash(message + " " + (gettext("Written.") if form.commit.data else gettext(
        "Checked; nothing written (tick the box to write it).")), "success")
    return redirect(url_for(".dnc_list"))
