"""Reports (统计报表): figures, daily trend, per-manager ranking, the rows
behind each figure, and their export to XLSX and CSV.

Every figure comes from khhf.services.reports (one query module, shared
with the feedback rate). Who sees what: an administrator every county; a
supervisor their own county (another county, or a manager or campaign of
another county, is a 404); a manager their own figures only.
"""

from __future__ import annotations

import datetime as dt

from flask import Blueprint, abort, current_app, redirect, render_template, url_for
from flask_babel import gettext
from flask_babel import lazy_gettext as _l
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from khhf.models import (Call, Campaign, County, Feedback, Manager, ResultCode, Task,
                         TaskType, User)
from khhf.names import by_manager_name
from khhf.phones import mask_phone
from khhf.services import exports, reports
from khhf.services.exports import Table
from webui import charts, i18n, params
from webui.access import allow, load, scope
from webui.db import get_db
from webui.exports import download

bp = Blueprint("reports", __name__, url_prefix="/reports")

FILTER_PARAMS = dict(
    start=params.Day(_l("First day")), end=params.Day(_l("Last day")),
    county=params.Id(_l("County")), manager=params.Id(_l("Customer manager")),
    campaign=params.Id(_l("Campaign")), task_type=params.Id(_l("Task type")))


def _today() -> dt.date:
    return current_app.extensions["khhf_settings"].today()


def _filter(start, end, county, manager, campaign, task_type) -> reports.Filter:
    """The report's filter, bounded to what the current user may see."""
    end = end or _today()
    start = start or end.replace(day=1)
    if end < start:
        raise params.BadParameter(gettext("The last day is before the first day: swap them."))
    if (end - start).days >= reports.MAX_DAYS:
        raise params.BadParameter(gettext("A report covers at most %(days)d days: choose a "
                                          "shorter period.", days=reports.MAX_DAYS))
    user = current_user
    if user.role == "manager":
        own = user.manager
        if own is None:
            abort(404)
        if manager not in (None, own.id) or county not in (None, own.county_id):
            abort(404)
        manager, county = own.id, None
    elif user.role == "supervisor":
        if county not in (None, user.county_id):
            abort(404)
        county = user.county_id
    if county is not None:
        load(County, county)
    if manager is not None:
        load(Manager, manager)
    if campaign is not None and user.role != "manager":
        load(Campaign, campaign)
    if task_type is not None and get_db().get(TaskType, task_type) is None:
        abort(404)
    return reports.Filter(start, end, county_id=county, manager_id=manager,
                          campaign_id=campaign, task_type_id=task_type)


def _args(flt: reports.Filter, **extra) -> dict:
    """The filter as query parameters (for links and exports)."""
    out = dict(start=flt.start.isoformat(), end=flt.end.isoformat())
    for key, name in (("county_id", "county"), ("manager_id", "manager"),
                      ("campaign_id", "campaign"), ("task_type_id", "task_type")):
        if getattr(flt, key) is not None:
            out[name] = getattr(flt, key)
    out.update(extra)
    return out


def _choices(flt: reports.Filter) -> dict:
    db = get_db()
    counties = db.scalars(select(County).where(scope(County)).order_by(County.code)).all()
    managers = by_manager_name(db.scalars(select(Manager).join(User).where(
        scope(Manager), *([Manager.county_id == flt.county_id] if flt.county_id else []))))
    campaigns = db.scalars(select(Campaign).where(
        scope(Campaign), *([Campaign.county_id == flt.county_id] if flt.county_id else []))
        .order_by(Campaign.id.desc()).limit(200)).all() if current_user.role != "manager" \
        else []
    task_types = db.scalars(select(TaskType).order_by(TaskType.id)).all()
    return dict(counties=counties, managers=managers, campaigns=campaigns,
                task_types=task_types)


def _names(ids) -> dict[int, str]:
    ids = set(ids)
    if not ids:
        return {}
    return dict(get_db().execute(select(Manager.id, User.display_name).join(User)
                                 .where(Manager.id.in_(ids))).all())


def _code_rows(flt: reports.Filter, total: int):
    counts = reports.results_by_code(get_db(), flt)
    codes = {c.id: c for c in get_db().scalars(select(ResultCode).where(
        ResultCode.id.in_([c for c, _n in counts])))}
    types = {t.id: t for t in get_db().scalars(select(TaskType))}
    return [(codes[c], i18n.task_type_name(types[codes[c].task_type_id]), n,
             n / total if total else None) for c, n in counts if c in codes]


@bp.route("/")
@allow("admin", "supervisor", "manager")
@params.query(**FILTER_PARAMS)
def index(start, end, county, manager, campaign, task_type):
    flt = _filter(start, end, county, manager, campaign, task_type)
    db = get_db()
    total = reports.summary(db, flt)
    days = reports.trend(db, flt)
    ranked = reports.ranking(db, flt) if flt.manager_id is None else []
    return render_template(
        "reports/index.html", flt=flt, total=total, days=days, ranked=ranked,
        names=_names(m for m, _f in ranked), codes=_code_rows(flt, total.results_filed),
        figures=reports.FIGURES, args=_args(flt), refreshed=reports.refreshed_at(db),
        chart=charts.trend_chart(days, drill=lambda day: url_for(
            ".drill", **_args(flt, figure="calls_out", day=day.isoformat()))),
        **_choices(flt))


DRILL_PARAMS = dict(FILTER_PARAMS, figure=params.Choice(_l("Figure"), reports.FIGURE_KEYS),
                    day=params.Day(_l("Day")), before=params.Id(_l("Before")))


def _drill_filter(start, end, county, manager, campaign, task_type, figure, day):
    flt = _filter(start, end, county, manager, campaign, task_type)
    if day is not None and not flt.start <= day <= flt.end:
        raise params.BadParameter(gettext("The day is outside the report's period."))
    return flt


@bp.route("/drill")
@allow("admin", "supervisor", "manager")
@params.query(**DRILL_PARAMS)
def drill(start, end, county, manager, campaign, task_type, figure, day, before):
    if figure is None:  # which figure's rows? the report lists them all
        return redirect(url_for(".index"))
    flt = _drill_filter(start, end, county, manager, campaign, task_type, figure, day)
    settings = current_app.extensions["khhf_settings"]
    db = get_db()
    ids = reports.drill_ids(db, settings.timezone, flt, figure, before=before, day=day)
    kind = reports.drill_kind(figure)
    rows = _load(kind, ids)
    label = dict((f[0], f[1]) for f in reports.FIGURES)[figure]
    more = url_for(".drill", **_args(flt, figure=figure, before=ids[-1],
                                     **({"day": day.isoformat()} if day else {}))) \
        if len(ids) == reports.DRILL_PAGE else None
    return render_template("reports/drill.html", flt=flt, kind=kind, rows=rows,
                           figure=figure, figure_label=label, day=day, more=more,
                           args=_args(flt, figure=figure,
                                      **({"day": day.isoformat()} if day else {})),
                           names=_names(r.manager_id for r in rows if r.manager_id),
                           codes=dict(db.execute(select(ResultCode.id, ResultCode.label))
                                      .all()) if kind == "results" else {})


def _load(kind: str, ids: list[int]) -> list:
    model = {"calls": Call, "tasks": Task, "results": Feedback}[kind]
    if not ids:
        return []
    query = select(model).where(model.id.in_(ids))
    if model is Task:
        query = query.options(selectinload(Task.customer), selectinload(Task.task_type))
    found = {o.id: o for o in get_db().scalars(query)}
    return [found[i] for i in ids if i in found]


# -- exports ---------------------------------------------------------------------------

def _report_tables(flt: reports.Filter):
    """The tables of a report: the totals, each day, each manager, each result code."""
    db = get_db()
    labels = [gettext(f[1]) for f in reports.FIGURES]
    kinds = [f[2] for f in reports.FIGURES]
    keys = [f[0] for f in reports.FIGURES]
    total = reports.summary(db, flt)
    yield Table(gettext("Totals"), [gettext("Period")] + labels,
                [[f"{flt.start} – {flt.end}"] + [total.value(k) for k in keys]], ["text"] + kinds)
    yield Table(gettext("Daily trend"), [gettext("Day")] + labels,
                [[day.isoformat()] + [f.value(k) for k in keys]
                 for day, f in reports.trend(db, flt)], ["text"] + kinds)
    ranked = reports.ranking(db, flt)
    names = _names(m for m, _f in ranked)
    yield Table(gettext("Managers"), [gettext("Rank"), gettext("Customer manager")] + labels,
                [[i + 1, names.get(m, str(m))] + [f.value(k) for k in keys]
                 for i, (m, f) in enumerate(ranked)], ["count", "text"] + kinds)
    yield Table(gettext("Results"), [gettext("Result"), gettext("Task type"),
                                     gettext("Results filed"), gettext("Share")],
                [[c.label, t, n, r] for c, t, n, r in _code_rows(flt, total.results_filed)],
                ["text", "text", "count", "rate"])


def _drill_table(flt: reports.Filter, figure: str, day: dt.date | None):
    """The table of the rows behind a figure,
    fetched in batches (bounded memory, however many rows)."""
    settings = current_app.extensions["khhf_settings"]
    kind = reports.drill_kind(figure)
    db = get_db()
    heads = {
        "calls": ([_l("Call"), _l("Time"), _l("Direction"), _l("Customer manager"),
                   _l("Customer number"), _l("Outcome"), _l("Talk time (s)"), _l("Task")],
                  ["count", "text", "text", "text", "text", "text", "count", "count"]),
        "tasks": ([_l("Task"), _l("Created"), _l("Customer manager"), _l("Customer number"),
                   _l("Status"), _l("Task type")],
                  ["count", "text", "text", "text", "text", "text"]),
        "results": ([_l("Result"), _l("Time"), _l("Customer manager"), _l("Task"),
                     _l("Result code"), _l("Channel"), _l("Call-back time")],
                    ["count", "text", "text", "count", "text", "text", "text"]),
    }[kind]

    local = exports.local_time(settings)

    labels: dict = {}

    def once(key, make):
        """A label, translated once per export rather than once per row."""
        if key not in labels:
            labels[key] = str(make())
        return labels[key]

    def rows():
        names: dict = {}
        codes = {c.id: c.label for c in db.scalars(select(ResultCode))}
        types = {t.id: i18n.task_type_name(t) for t in db.scalars(select(TaskType))}
        for ids in reports.drill_batches(db, settings.timezone, flt, figure, day=day,
                                         size=exports.BATCH):
            objects = _load(kind, ids)
            missing = {o.manager_id for o in objects if o.manager_id} - set(names)
            names.update(_names(missing))
            for o in objects:
                who = names.get(o.manager_id, "") if o.manager_id else ""
                if kind == "calls":
                    yield [o.id, local(o.requested_at),
                           once(o.direction, lambda: i18n.label(i18n.DIRECTION_LABELS,
                                                                o.direction)),
                           who, mask_phone(o.customer_number),
                           once(("outcome", o.outcome or o.state), lambda: i18n.call_outcome(o)),
                           o.talk_seconds or 0, o.task_id or ""]
                elif kind == "tasks":
                    yield [o.id, local(o.created_at), who, mask_phone(o.customer.phone),
                           once(("status", o.status),
                                lambda: i18n.label(i18n.TASK_STATUS_LABELS, o.status)),
                           types.get(o.task_type_id, "")]
                else:
                    yield [o.id, local(o.created_at), who, o.task_id,
                           codes.get(o.result_code_id, ""),
                           once(("channel", o.channel),
                                lambda: i18n.label(CHANNEL_LABELS, o.channel)),
                           local(o.appointment_at)]
            db.expunge_all()  # keep the session's identity map small
    label = gettext(dict((f[0], f[1]) for f in reports.FIGURES)[figure])
    return Table(label, [str(h) for h in heads[0]], rows(), heads[1])


CHANNEL_LABELS = i18n.CHANNEL_LABELS


def _filename(flt: reports.Filter, suffix: str) -> str:
    return f"report-{flt.start:%Y%m%d}-{flt.end:%Y%m%d}{suffix}"


def _export(fmt: str, flt: reports.Filter):
    tables = list(_report_tables(flt))
    return download(fmt, tables, _filename(flt, f".{fmt}"))[0]


@bp.route("/export.xlsx")
@allow("admin", "supervisor", "manager")
@params.query(**FILTER_PARAMS)
def export_xlsx(start, end, county, manager, campaign, task_type):
    return _export("xlsx", _filter(start, end, county, manager, campaign, task_type))


@bp.route("/export.csv")
@allow("admin", "supervisor", "manager")
@params.query(**FILTER_PARAMS)
def export_csv(start, end, county, manager, campaign, task_type):
    return _export("csv", _filter(start, end, county, manager, campaign, task_type))


DRILL_EXPORT_PARAMS = {k: v for k, v in DRILL_PARAMS.items() if k != "before"}


def _drill_export(fmt, start, end, county, manager, campaign, task_type, figure, day):
    if figure is None:
        return redirect(url_for(".index"))
    flt = _drill_filter(start, end, county, manager, campaign, task_type, figure, day)
    table = _drill_table(flt, figure, day)
    return download(fmt, [table], _filename(flt, f"-{figure}.{fmt}"))[0]


@bp.route("/drill.xlsx")
@allow("admin", "supervisor", "manager")
@params.query(**DRILL_EXPORT_PARAMS)
def drill_xlsx(**kw):
    return _drill_export("xlsx", **kw)


@bp.route("/drill.csv")
@allow("admin", "supervisor", "manager")
@params.query(**DRILL_EXPORT_PARAMS)
def drill_csv(**kw):
    return _drill_export("csv", **kw)


@bp.app_context_processor
def _report_labels():
    return {"CHANNEL_LABELS": CHANNEL_LABELS}


def month_summary(county_id: int | None = None, manager_id: int | None = None):
    """This month's figures for a home page's summary: (filter, figures)."""
    today = _today()
    flt = reports.Filter(today.replace(day=1), today, county_id=county_id, manager_id=manager_id)
    return flt, reports.summary(get_db(), flt)
