"""Reports (khhf.services.reports): every figure, from the daily sums,
equals a direct count over the raw rows of generated history, for every
filter (all, each county, manager, campaign, task type), per day, per
manager and per result code; the drill-down lists exactly the rows
counted; a refresh after new rows rebuilds the days they touch. On SQLite
and PostgreSQL, made from schema.sql.

The direct counts below are written from the figure definitions in the
module's docstring, in Python over the ORM rows, not from its SQL.
"""

from __future__ import annotations

import collections
import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from khhf import db
from khhf.models import Call, Feedback, Manager, ResultCode, Task
from khhf.services import reports
from simkit import report_data

ZONE = "Asia/Shanghai"
START = dt.datetime(2026, 10, 31, 16, 0)   # local midnight, 1 November
DAYS = 10
NOW = START + dt.timedelta(days=DAYS + 2)


@pytest.fixture(params=["sqlite", "postgresql"])
def s(request, tmp_path):
    if request.param == "sqlite":
        engine = db.make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    else:
        engine = request.getfixturevalue("pg_database")("reports")
    db.create_schema(engine)
    with db.session_factory(engine)() as session:
        yield session
    engine.dispose()


@pytest.fixture
def made(s):
    made = report_data.generate(s, start=START, days=DAYS)
    assert reports.refresh_due(s, ZONE, now=NOW) is not None
    s.commit()
    return made


def local_day(at: dt.datetime) -> dt.date:
    return at.replace(tzinfo=dt.timezone.utc).astimezone(ZoneInfo(ZONE)).date()


def secs(a: dt.datetime, b: dt.datetime) -> int:
    return int((a.replace(microsecond=0) - b.replace(microsecond=0)).total_seconds())


def direct(s) -> list[tuple[dict, str, int, int]]:
    """Every (bucket, counter, local day, amount, row id) straight from the
    raw rows, by the definitions in khhf.services.reports."""
    out = []
    managers = {m.id: m for m in s.scalars(select(Manager))}
    codes = {c.id: c for c in s.scalars(select(ResultCode))}
    tasks = {t.id: t for t in s.scalars(select(Task))}
    calls = list(s.scalars(select(Call)))
    feedback = list(s.scalars(select(Feedback)))
    by_call = collections.defaultdict(list)
    for f in feedback:
        by_call[f.call_id].append(f)

    def add(bucket, counter, at, amount, row_id):
        out.append((bucket, counter, local_day(at), amount, row_id))

    def task_keys(task):
        return dict(campaign_id=task.campaign_id or 0, task_type_id=task.task_type_id)

    for t in tasks.values():
        county = managers[t.manager_id].county_id if t.manager_id else t.customer.county_id
        add(dict(county_id=county, manager_id=t.manager_id or 0, **task_keys(t)),
            "tasks_assigned", t.created_at, 1, t.id)
    for c in calls:
        bucket = dict(county_id=c.county_id or 0, manager_id=c.manager_id or 0)
        if c.direction == "inbound":
            bucket.update(campaign_id=0, task_type_id=0)
            add(bucket, "hotline_calls", c.requested_at, 1, c.id)
            if c.outcome in ("desk", "mobile"):
                add(bucket, f"hotline_{c.outcome}", c.requested_at, 1, c.id)
            if (c.outcome or "").startswith("group"):
                add(bucket, "hotline_group", c.requested_at, 1, c.id)
            if c.outcome == "missed":
                add(bucket, "hotline_missed", c.requested_at, 1, c.id)
                for hours in (1, 4, 24):
                    if c.customer_id and any(
                            o.direction == "outbound" and o.customer_id == c.customer_id
                            and c.end_at <= o.requested_at <= c.end_at + dt.timedelta(hours=hours)
                            for o in calls):
                        add(bucket, f"missed_cb_{hours}h", c.requested_at, 1, c.id)
            continue
        task = tasks.get(c.task_id)
        bucket.update(campaign_id=task.campaign_id or 0 if task else 0,
                      task_type_id=task.task_type_id if task else 0)
        add(bucket, "calls_out", c.requested_at, 1, c.id)
        if c.answer_at is None:
            continue
        add(bucket, "calls_connected", c.requested_at, 1, c.id)
        add(bucket, "talk_seconds", c.requested_at, c.talk_seconds or 0, c.id)
        if by_call[c.id]:
            first = min(by_call[c.id], key=lambda f: (f.created_at, f.id))
            add(bucket, "fb_calls", c.requested_at, 1, c.id)
            add(bucket, f"fb_{first.channel}", c.requested_at, 1, c.id)
            wait = secs(first.created_at, c.end_at or c.answer_at)
            add(bucket, "fb_seconds", c.requested_at, max(wait, 0), c.id)
            if wait <= 3600:
                add(bucket, "fb_within_1h", c.requested_at, 1, c.id)
    for f in feedback:
        task = tasks[f.task_id]
        bucket = dict(county_id=managers[f.manager_id].county_id, manager_id=f.manager_id,
                      **task_keys(task))
        add(bucket, "results_filed", f.created_at, 1, f.id)
        add(bucket, f"code:{f.result_code_id}", f.created_at, 1, f.id)
        if codes[f.result_code_id].is_final:
            add(bucket, "tasks_completed", f.created_at, 1, f.id)
        if f.appointment_at is not None:
            add(bucket, "callbacks_due", f.appointment_at, 1, f.id)
            if any(c.task_id == f.task_id and c.direction == "outbound"
                   and f.created_at <= c.requested_at
                   <= f.appointment_at + dt.timedelta(minutes=30) for c in calls):
                add(bucket, "callbacks_kept", f.appointment_at, 1, f.id)
    return out


def totals(rows, flt: reports.Filter, key=None):
    sums = collections.defaultdict(lambda: collections.Counter())
    for bucket, counter, day, amount, _id in rows:
        if flt.start <= day <= flt.end and all(bucket[k] == v for k, v in flt.keys().items()):
            sums[key(bucket, day) if key else None][counter] += amount
    return sums


def filters(s, made):
    first, last = local_day(START), local_day(START + dt.timedelta(days=DAYS + 2))
    out = [reports.Filter(first, last), reports.Filter(first + dt.timedelta(days=3),
                                                       first + dt.timedelta(days=5))]
    for county in made["counties"]:
        out.append(reports.Filter(first, last, county_id=county.id))
    for manager_id in s.scalars(select(Manager.id)):
        out.append(reports.Filter(first, last, manager_id=manager_id))
    for task_type in made["task_types"]:
        out.append(reports.Filter(first, last, task_type_id=task_type.id))
        # the task type roll-up within a county; with a manager, the finest table
        out.append(reports.Filter(first, last, task_type_id=task_type.id,
                                  county_id=made["counties"][0].id))
        out.append(reports.Filter(first, last, task_type_id=task_type.id,
                                  manager_id=s.scalar(select(func.min(Manager.id)))))
    campaign = s.scalar(select(Task.campaign_id).where(Task.campaign_id.is_not(None)))
    out.append(reports.Filter(first, last, campaign_id=campaign,
                              county_id=made["counties"][0].id))
    return out


def test_every_figure_equals_a_direct_count_over_the_raw_rows(s, made):
    rows = direct(s)
    assert {counter for _b, counter, _d, amount, _i in rows if amount} >= set(reports.COUNTERS), \
        "the generated history leaves a figure at zero: it would prove nothing"
    for flt in filters(s, made):
        expected = totals(rows, flt)[None]
        got = reports.summary(s, flt)
        assert {n: got.value(n) for n in reports.COUNTERS} == \
            {n: expected[n] for n in reports.COUNTERS}, flt


def test_daily_trend_ranking_and_outcome_rates_equal_direct_counts(s, made):
    rows = direct(s)
    for flt in filters(s, made)[:4]:
        by_day = totals(rows, flt, key=lambda b, day: day)
        for day, figures in reports.trend(s, flt):
            assert {n: figures.value(n) for n in reports.COUNTERS} == \
                {n: by_day[day][n] for n in reports.COUNTERS}, (flt, day)
        by_manager = totals(rows, flt, key=lambda b, day: b["manager_id"])
        ranked = reports.ranking(s, flt)
        assert {m for m, _f in ranked} == {m for m, c in by_manager.items()
                                           if m and any(c.values())}
        for manager_id, figures in ranked:
            assert figures.fb_calls == by_manager[manager_id]["fb_calls"]
            assert figures.calls_connected == by_manager[manager_id]["calls_connected"]
        rates = [f.feedback_rate or 0 for _m, f in ranked]
        assert rates == sorted(rates, reverse=True)
        everything = totals(rows, flt)[None]
        codes = {int(k[5:]): n for k, n in everything.items() if k.startswith("code:") and n}
        assert dict(reports.results_by_code(s, flt)) == codes
        assert sum(codes.values()) == everything["results_filed"]


@pytest.mark.parametrize("figure", ["tasks_assigned", "calls_connected", "feedback_rate",
                                    "fb_sms", "tasks_completed", "callbacks_kept",
                                    "hotline_missed", "missed_cb_4h", "hotline_group"])
def test_drill_down_lists_exactly_the_rows_a_figure_counts(s, made, figure):
    counter = dict((f[0], f[3]) for f in reports.FIGURES)[figure]
    rows = direct(s)
    # newest first: by the moment that dates each row, then id
    moment = {"tasks": lambda i: s.get(Task, i).created_at,
              "calls": lambda i: s.get(Call, i).requested_at,
              "results": (lambda i: s.get(Feedback, i).appointment_at)
              if counter.startswith("callbacks") else (lambda i: s.get(Feedback, i).created_at)
              }[reports.drill_kind(figure)]
    for flt in filters(s, made)[:3]:
        expected = sorted({i for b, c, day, amount, i in rows if c == counter and amount
                           and flt.start <= day <= flt.end
                           and all(b[k] == v for k, v in flt.keys().items())},
                          key=lambda i: (moment(i), i), reverse=True)
        got, before = [], None
        while True:
            page = reports.drill_ids(s, ZONE, flt, figure, before=before, limit=7)
            got += page
            if len(page) < 7:
                break
            before = page[-1]
        assert got == expected, (figure, flt)
    kind = reports.drill_kind(figure)
    assert kind == {"tasks_assigned": "tasks", "tasks_completed": "results",
                    "callbacks_kept": "results"}.get(figure, "calls")


def test_check_finds_sums_that_differ_from_direct_counts(s, made):
    first, last = local_day(START), local_day(NOW)
    assert reports.check(s, ZONE, first, last) == []
    row = s.scalar(select(reports.ReportDaily).where(reports.ReportDaily.calls_out > 0).limit(1))
    row.calls_out += 1
    s.flush()
    wrong = reports.check(s, ZONE, first, last)
    # the stored sum against the raw rows; its roll-ups (county, manager,
    # task type) against it
    assert len(wrong) == 4 and {w[0] for w in wrong} == {row.day}
    assert sorted(w[2] - w[3] for w in wrong) == [-1, -1, -1, 1]
    assert sum("'task_type_id'" in w[1] and "'manager_id'" not in w[1] for w in wrong) == 1


def test_refresh_rebuilds_the_days_new_rows_touch(s, made):
    """A result filed late for an old call, and a call-back of an old missed
    call, change past days: the next refresh picks them up."""
    flt = reports.Filter(local_day(START), local_day(NOW))
    before = reports.summary(s, flt)
    call = s.scalar(select(Call).where(Call.direction == "outbound", Call.answer_at.is_not(None),
                                       ~Call.id.in_(select(Feedback.call_id).where(
                                           Feedback.call_id.is_not(None))))
                    .order_by(Call.requested_at).limit(1))
    task = s.get(Task, call.task_id)
    code = s.scalar(select(ResultCode).where(ResultCode.task_type_id == task.task_type_id,
                                             ResultCode.is_final))
    s.add(Feedback(task_id=task.id, call_id=call.id, manager_id=call.manager_id,
                   result_code_id=code.id, channel="sms", created_at=NOW))
    s.flush()
    assert reports.refresh_due(s, ZONE, now=NOW + dt.timedelta(minutes=5)) is not None
    after = reports.summary(s, flt)
    assert after.fb_calls == before.fb_calls + 1
    assert after.fb_sms == before.fb_sms + 1
    rows = direct(s)
    expected = totals(rows, flt)[None]
    assert {n: after.value(n) for n in reports.COUNTERS} == \
        {n: expected[n] for n in reports.COUNTERS}


def test_drill_down_pages_through_rows_that_share_a_moment(s, made):
    """Rows dated by the same moment are ordered by id, and a page ends
    between them without losing or repeating one."""
    calls = list(s.scalars(select(Call).where(Call.direction == "outbound",
                                              Call.answer_at.is_not(None))
                           .order_by(Call.id).limit(6)))
    assert len(calls) == 6
    for c in calls[1:]:
        c.requested_at = calls[0].requested_at
    s.flush()
    day = local_day(calls[0].requested_at)
    flt = reports.Filter(day, day)
    expected = sorted({i for b, c, d, amount, i in direct(s)
                       if c == "calls_connected" and d == day},
                      key=lambda i: (s.get(Call, i).requested_at, i), reverse=True)
    assert {c.id for c in calls} <= set(expected)
    got, before = [], None
    while True:
        page = reports.drill_ids(s, ZONE, flt, "calls_connected", before=before, limit=2)
        got += page
        if len(page) < 2:
            break
        before = page[-1]
    assert got == expected


def test_the_set_based_build_equals_the_day_by_day_one(s, made):
    """The whole period in one statement per table (the fixture's build)
    stores exactly what a rebuild of each day alone stores, row for row."""
    tables = (reports.ReportDaily, reports.ReportDailyResult,
              *(rollup[0] for rollup in reports._rollups()))

    def stored():
        return {model.__tablename__: sorted(
            tuple(getattr(row, c.key) for c in model.__table__.columns)
            for row in s.scalars(select(model))) for model in tables}
    first, last = local_day(START), local_day(NOW)
    assert reports.check(s, ZONE, first, last) == []
    whole = stored()
    assert whole["report_daily"] and whole["report_daily_results"]
    day = first
    while day <= last:
        reports.refresh(s, ZONE, day, day)
        day += dt.timedelta(days=1)
    assert stored() == whole


@pytest.mark.parametrize("zone", ["America/New_York", "Asia/Shanghai", "Australia/Lord_Howe"])
def test_a_moments_day_in_sql_is_its_local_day_across_offset_changes(zone):
    """The day the set-based build gives each moment (SQL, by the zone's
    offsets over the period) is its local day, around daylight-saving
    changes too (Lord Howe's is half an hour)."""
    import sqlite3
    lo, hi = dt.datetime(2026, 3, 1), dt.datetime(2026, 11, 30)
    changes = reports._offsets(zone, lo, hi)
    assert len(changes) == (1 if zone == "Asia/Shanghai" else 3)
    day_sql, params = reports._day_sql("sqlite", changes)
    stored = "%Y-%m-%d %H:%M:%S.%f"  # as SQLAlchemy keeps a timestamp in SQLite
    bound = {k: v.strftime(stored) for k, v in params.items()}
    moments = [lo + dt.timedelta(minutes=i) for i in range(0, 394_000, 97)]
    for start, _offset in changes[1:]:
        moments += [start + dt.timedelta(seconds=k) for k in (-3601, -1, 0, 1, 3600)]
    conn = sqlite3.connect(":memory:")
    for at in moments:
        got = conn.execute(f"SELECT {day_sql} FROM (SELECT :at AS at)",
                           {"at": at.strftime(stored), **bound}).fetchone()[0]
        local = at.replace(tzinfo=dt.timezone.utc).astimezone(ZoneInfo(zone)).date()
        assert got == local.isoformat(), (zone, at)
