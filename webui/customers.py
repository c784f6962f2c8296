"""Customers (客户管理): administrators see all, county supervisors their
county, managers their own customers (read only).

Lists show numbers masked (khhf.phones.mask_phone); the customer's page,
opened by someone whose scope includes the customer, shows the whole
number (the editor needs it, the manager calls it). Search takes the whole
number or a part of it.
"""

from __future__ import annotations

from flask import Blueprint, current_app, flash, redirect, render_template, request, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select
from wtforms import SelectField, StringField, TextAreaField

from khhf.models import Call, County, Customer, Manager, Task
from khhf.services import customers, dnc, exports, lookups
from webui import params
from webui.access import allow, client_ip, load, scope
from webui.db import get_db, writing
from webui.exports import audited_download
from webui.forms import FlaskForm, _int_or_none, manager_choices

bp = Blueprint("customers", __name__, url_prefix="/customers")


class CustomerForm(FlaskForm):
    name = StringField(_l("Name"))
    phone = StringField(_l("Phone"))
    note = TextAreaField(_l("Note"))


class DoNotCallForm(FlaskForm):
    reason = StringField(_l("Reason"))


class ConsentForm(FlaskForm):
    source = StringField(_l("Consent source"))


class ReassignForm(FlaskForm):
    manager_id = SelectField(_l("New manager"), coerce=_int_or_none, validate_choice=False)


@bp.route("/")
@allow("admin", "supervisor", "manager")
@params.query(after=params.Id(_l("Page")), county=params.Id(_l("County")))
def index(after, county):
    db = get_db()
    q = request.args.get("q", "")[:64]
    where = scope(Customer)
    county_id = county
    if county_id:
        where = where & (Customer.county_id == county_id)
    rows = customers.search(db, where, q, after=after, limit=customers.PAGE_SIZE + 1)
    more = len(rows) > customers.PAGE_SIZE
    rows = rows[:customers.PAGE_SIZE]
    counties = lookups.counties(db) if current_user.role == "admin" else []
    return render_template("customers/index.html", customers=rows, q=q, county_id=county_id,
                           counties=counties, next_after=rows[-1].id if more else None)


@bp.route("/export.<any(xlsx, csv):fmt>", methods=["POST"])
@allow("admin", "supervisor")
@params.query(county=params.Id(_l("County")))
def export(fmt, county):
    """Every customer of a county (a supervisor: their own; an administrator:
    the one chosen, else every county) with whole numbers, for the county's
    CRM; audited. Managers cannot: a manager's customers leave the system
    only through the county that answers for them."""
    def build(reading):
        county_id = county or (current_user.county_id
                               if current_user.role == "supervisor" else None)
        chosen = load(County, county_id, reading) if county_id else None
        local = exports.local_time(current_app.extensions["khhf_settings"])
        return ([exports.customer_table(reading, chosen, gettext, local)],
                {"kind": "customers", "county": chosen})
    return audited_download(fmt, build)


def _reassign_form(customer, **kwargs) -> ReassignForm:
    form = ReassignForm(**kwargs)
    form.manager_id.choices = manager_choices(
        lookups.managers(get_db(), county_id=customer.county_id, active_only=True,
                         except_id=customer.manager_id), gettext("— choose —"))
    return form


def _detail(customer, form=None, dnc_form=None, reassign_form=None, consent_form=None,
            status=200):
    db = get_db()
    history = customers.history(db, customer)
    names = {m.id: f"{m.user.display_name} ({m.employee_no})" for m in db.scalars(
        select(Manager).where(Manager.id.in_({a.manager_id for a in history})))}
    return render_template(
        "customers/detail.html", customer=customer,
        managers_by_id=lambda manager_id: names.get(manager_id, "—"),
        form=form or CustomerForm(obj=customer, formdata=None),
        dnc_form=dnc_form or DoNotCallForm(formdata=None),
        consent_form=consent_form or ConsentForm(formdata=None),
        reassign_form=reassign_form or _reassign_form(customer, formdata=None),
        history=history,
        tasks=customers.tasks_of(db, customer, scope(Task)),
        calls=customers.calls_of(db, customer, scope(Call)),
        may_edit=current_user.role in ("admin", "supervisor")), status


@bp.route("/<int:customer_id>")
@allow("admin", "supervisor", "manager")
def detail(customer_id):
    return _detail(load(Customer, customer_id))


@bp.route("/<int:customer_id>/edit", methods=["POST"])
@allow("admin", "supervisor")
def edit(customer_id):
    customer = load(Customer, customer_id)
    form = CustomerForm()
    if form.validate_on_submit():
        with writing(form) as w:
            customers.update(w.session, current_user, client_ip(), customer, name=form.name.data,
                             phone=form.phone.data, note=form.note.data)
        if w.saved:
            flash(gettext("Customer saved."), "success")
            return redirect(url_for(".detail", customer_id=customer.id))
    return _detail(customer, form=form)


@bp.route("/<int:customer_id>/do-not-call", methods=["POST"])
@allow("admin", "supervisor")
def do_not_call(customer_id):
    customer = load(Customer, customer_id)
    form = DoNotCallForm()
    flag = request.form.get("do_not_call") == "1"
    if form.validate_on_submit():
        with writing(form) as w:
            dnc.set_for_customer(w.session, current_user, client_ip(), customer, flag,
                                      form.reason.data)
        if w.saved:
            flash(gettext("The customer will not be called.") if flag
                  else gettext("The customer may be called again."), "success")
            return redirect(url_for(".detail", customer_id=customer.id))
    return _detail(customer, dnc_form=form)


@bp.route("/<int:customer_id>/consent", methods=["POST"])
@allow("admin", "supervisor")
def consent(customer_id):
    """Record or withdraw the customer's consent to marketing calls."""
    customer = load(Customer, customer_id)
    form = ConsentForm()
    given = request.form.get("consent") == "1"
    if form.validate_on_submit():
        with writing(form) as w:
            customers.set_consent(w.session, current_user, client_ip(), customer, given,
                                  form.source.data)
        if w.saved:
            flash(gettext("The customer's consent is recorded.") if given
                  else gettext("The customer's consent is withdrawn."), "success")
            return redirect(url_for(".detail", customer_id=customer.id))
    return _detail(customer, consent_form=form)


@bp.route("/<int:customer_id>/manager", methods=["POST"])
@allow("admin", "supervisor")
def reassign(customer_id):
    customer = load(Customer, customer_id)
    form = _reassign_form(customer)
    if form.validate_on_submit():
        with writing(form) as w:
            customers.reassign(w.session, current_user, client_ip(), customer,
                               form.manager_id.data)
        if w.saved:
            flash(gettext("The customer now belongs to %(name)s; their calls ring that "
                          "manager.", name=customer.manager.user.display_name), "success")
            return redirect(url_for(".detail", customer_id=customer.id))
    return _detail(customer, reassign_form=form)
