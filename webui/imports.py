"""Imports (导入): upload a spreadsheet, see the preview (counts and every
rejected row), map unrecognised columns, download the rejected rows, and
commit. Checking and committing run in a background thread
(khhf.services.import_jobs); the page polls a small JSON status.

Administrators import for any county; county supervisors for their own.
"""

from __future__ import annotations

import io
from pathlib import Path

from flask import Blueprint, abort, current_app, flash, jsonify, redirect, render_template, request, send_file, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from flask_wtf.file import FileField
from sqlalchemy import select
from wtforms import SelectChoice, SelectField

from khhf.models import Campaign, County, ImportJob
from khhf.services import import_jobs, imports, lookups
from webui import params
from webui.access import allow, load, scope
from webui.db import get_db, reread, writing
from webui.forms import ConfirmForm, FlaskForm, _int_or_none, county_choices, county_field
from webui.i18n import IMPORT_KIND_LABELS

bp = Blueprint("imports", __name__, url_prefix="/imports")

PAGE_SIZE = 200
KIND_LABELS = IMPORT_KIND_LABELS


class ImportForm(FlaskForm):
    kind = SelectField(_l("What to import"), validate_choice=False, choices=[
        SelectChoice(k, label) for k, label in KIND_LABELS.items()])
    county_id = county_field(_l("County (for rows without one)"))
    campaign_id = SelectField(_l("Campaign (tasks)"), coerce=_int_or_none, validate_choice=False)
    file = FileField(_l("Spreadsheet (.xlsx or .csv)"))


def _root() -> Path:
    return Path(current_app.extensions["khhf_settings"].home) / "imports"


def _form() -> ImportForm:
    form = ImportForm()
    db = get_db()
    counties = lookups.counties(db, scope(County))
    if current_user.role == "admin":
        form.county_id.choices = county_choices(counties, gettext("— from the file —"))
    else:
        form.county_id.choices = county_choices(counties)
    campaigns = db.scalars(select(Campaign).where(
        Campaign.county_id.in_([c.id for c in counties]), Campaign.status != "closed")
        .order_by(Campaign.id.desc()).limit(200)).all()
    form.campaign_id.choices = [SelectChoice("", gettext("— none —"))] + [
        SelectChoice(c.id, f"{c.id} · {c.name}") for c in campaigns]
    return form


@bp.route("/", methods=["GET", "POST"])
@allow("admin", "supervisor")
def index():
    form = _form()
    db = get_db()
    if form.validate_on_submit():
        upload = form.file.data
        if not upload or not upload.filename:
            form.file.errors = [gettext("Choose the spreadsheet to import.")]
        else:
            county = db.get(County, form.county_id.data) if form.county_id.data else None
            if current_user.role != "admin":
                county = db.get(County, current_user.county_id)
            options = imports.Options(
                county_code=county.code if county else None,
                campaign_id=form.campaign_id.data if form.kind.data == "tasks" else None,
                only_county_id=None if current_user.role == "admin" else current_user.county_id)
            with writing() as w:
                job = import_jobs.create(w.session, current_user, form.kind.data,
                                         upload.filename, upload.stream, _root(), options,
                                         county_id=county.id if county else None)
            import_jobs.start(current_app.extensions["khhf_sessions"], job.id, _root())
            return redirect(url_for(".job", job_id=job.id))
    jobs = db.scalars(select(ImportJob).where(scope(ImportJob))
                      .order_by(ImportJob.id.desc()).limit(20)).all()
    return render_template("imports/index.html", form=form, jobs=jobs, kinds=KIND_LABELS,
                           status_of=import_jobs.status_of)


@bp.route("/template/<kind>.xlsx")
@allow("admin", "supervisor")
def template(kind):
    if kind not in imports.KINDS:
        abort(404)
    out = io.BytesIO()
    imports.write_template(kind, out)
    out.seek(0)
    name = {"customers": "客户导入模板", "managers": "客户经理导入模板",
            "tasks": "任务导入模板"}[kind]
    return send_file(out, as_attachment=True, download_name=f"{name}.xlsx",
                     mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")


def _load_job(job_id) -> ImportJob:
    """The job as its thread last left it: if the thread finished after this
    request read the row, read it again (a new transaction sees the commit)."""
    job = load(ImportJob, job_id)
    return reread(job) if import_jobs.status_of(job) != job.status else job


@bp.route("/<int:job_id>")
@allow("admin", "supervisor")
@params.query(page=params.Whole(_l("Page"), 1, 100_000, 1))
def job(job_id, page):
    job = _load_job(job_id)
    status = import_jobs.status_of(job)
    report = import_jobs.report_of(_root(), job.id) \
        if status in ("checked", "committed", "failed") else None
    error = import_jobs.error_of(job)
    return render_template(
        "imports/job.html", job=job, status=status, report=report, page=page,
        page_size=PAGE_SIZE, kinds=KIND_LABELS, fields=imports.FIELDS[job.kind],
        mapping=import_jobs.options_of(job).mapping, form=ConfirmForm(),
        error=gettext(error[0], **error[1]) if error else None,
        reason=lambda message, params: gettext(message, **params))


@bp.route("/<int:job_id>/status")
@allow("admin", "supervisor")
def status(job_id):
    job = _load_job(job_id)
    done, total = import_jobs.progress(job.id)
    return jsonify(status=import_jobs.status_of(job), done=done, total=total,
                   accepted=job.accepted_rows, rejected=job.rejected_rows)


@bp.route("/<int:job_id>/mapping", methods=["POST"])
@allow("admin", "supervisor")
def mapping(job_id):
    job = load(ImportJob, job_id)
    form = ConfirmForm()
    if form.validate_on_submit() and not import_jobs.is_running(job.id) \
            and import_jobs.status_of(job) in ("checked", "failed"):
        report = import_jobs.report_of(_root(), job.id)
        headers = report.headers if report else []
        names = {f.name for f in imports.FIELDS[job.kind]}
        chosen = {}
        for i, header in enumerate(headers):
            target = request.form.get(f"col{i}", "")
            if header and (target in names or target == ""):
                chosen[header] = target
        with writing():
            import_jobs.set_mapping(job, chosen)
        import_jobs.start(current_app.extensions["khhf_sessions"], job.id, _root())
    return redirect(url_for(".job", job_id=job.id))


@bp.route("/<int:job_id>/commit", methods=["POST"])
@allow("admin", "supervisor")
def commit(job_id):
    job = load(ImportJob, job_id)
    form = ConfirmForm()
    if form.validate_on_submit():
        if import_jobs.status_of(job) != "checked" or import_jobs.is_running(job.id):
            flash(gettext("This import is not ready to commit."), "warning")
        elif not job.accepted_rows:
            flash(gettext("No row is good: fix the file and import it again."), "warning")
        else:
            with writing():
                import_jobs.mark(job, commit=True)
            import_jobs.start(current_app.extensions["khhf_sessions"], job.id, _root(),
                              commit=True)
    return redirect(url_for(".job", job_id=job.id))


@bp.route("/<int:job_id>/rejects.xlsx")
@allow("admin", "supervisor")
def rejects(job_id):
    job = load(ImportJob, job_id)
    report = import_jobs.report_of(_root(), job.id)
    if report is None:
        abort(404)
    out = io.BytesIO()
    imports.write_rejects(report, out, lambda m, p: gettext(m, **p))
    out.seek(0)
    stem = Path(job.filename).stem
    return send_file(out, as_attachment=True, download_name=f"{stem}-{gettext('rejected')}.xlsx",
                     mimetype="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")
