"""Reports (统计报表) and the feedback rate (反馈率): the one query module.

Every figure is defined once here, as a predicate (or a value) over the
raw rows of one *source*; the same definition

- builds the daily sums (`refresh`: table report_daily, one row per local
  day and bucket (county, manager, campaign, task type)),
- and lists the rows behind a figure (`drill`: the calls, tasks or results
  a number counts).

Reports (`summary`, `trend`, `ranking`, `results_by_code`) sum the daily
rows, read from the coarsest table that has the filter's columns
(report_county_daily, report_manager_daily, report_type_daily,
report_daily), so a month of
every county is a sum over a few thousand rows, not a scan of millions of
calls. tests/test_reports.py proves that
each figure equals a direct count over the raw rows.

Days are local days in the site's time zone (Settings.timezone). Each row
is dated by its own moment:

Sources and their counters (the figures; a "bucket" is the row's county,
manager, campaign and task type; 0 where it has none):

tasks, dated by tasks.created_at, bucket of the task's current manager
(county: the manager's, else the customer's):
  tasks_assigned   已分配任务: tasks created in the period.

outbound calls, dated by calls.requested_at (bucket: the call's manager and
county, the task's campaign and type):
  calls_out        外呼次数: outbound call attempts placed.
  calls_connected  接通次数: of those, the customer answered (answer_at set).
  talk_seconds     of the connected ones, the talk time (calls.talk_seconds).
  fb_calls         已反馈通话: connected calls with a result filed for them
                   (a feedback row naming the call).
  fb_web/fb_sms/fb_keypad: of fb_calls, the channel of the call's first result.
  fb_seconds       of fb_calls, whole seconds from the call's end (its
                   answer if it has no end yet) to its first result; 0 if
                   the result came first.
  fb_within_1h     of fb_calls, those whose first result came within 3,600 s.

results (feedback rows), dated by feedback.created_at (bucket: the filing
manager's, the task's campaign and type):
  results_filed    反馈结果数: results filed, any code, any channel.
  tasks_completed  完成任务: results with a closing code (result_codes.is_final).
  (and per result code: report_daily_results, for the outcome rates)

booked call-backs, dated by feedback.appointment_at (the time booked):
  callbacks_due    预约回拨: call-backs booked for a time in the period.
  callbacks_kept   按时回拨: of those, the task had an outbound call placed
                   from the booking until 30 minutes after the booked time
                   (the workspace calls it overdue after that).

hotline calls (inbound), dated by calls.requested_at (bucket: the owning
manager, 0 if none, and the county; campaign and type 0):
  hotline_calls    热线来电: inbound calls.
  hotline_desk/hotline_mobile/hotline_group: answered at the owner's desk
                   phone, the owner's mobile, or by the county's on-duty group.
  hotline_missed   未接来电: nobody answered (outcome 'missed').
  missed_cb_1h/4h/24h: of the missed ones, an outbound call to the same
                   customer was placed within 1, 4 or 24 hours of the
                   missed call's end.

Rates (computed from the sums, never stored): 接通率 = calls_connected /
calls_out; 完成率 = tasks_completed / tasks_assigned (a flow over the
period: finishing older tasks can lift it above 100%); 反馈率 = fb_calls /
calls_connected; 平均反馈时长 (minutes) = fb_seconds / fb_calls / 60; 1小时内反馈率 =
fb_within_1h / calls_connected; 平均通话时长 = talk_seconds /
calls_connected; 按时回拨率 = callbacks_kept / callbacks_due; outcome rate
of a code = its results / results_filed.

Freshness: `refresh_due` (the timed job, `khhf reports refresh`) rebuilds
the days touched since the last refresh: every day from the earliest
moment among the rows added since (and the day before the last refresh,
for calls that were still on), less 24 hours (a call back may keep a
missed call that old), up to today. A task handed to another manager
stays counted where it was when its day was last rebuilt.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools

from sqlalchemy import Date, DateTime, Integer, TextClause, bindparam, delete, func, select, text
from sqlalchemy.orm import Session

from khhf import local_time
from khhf.calls.states import CallOutcome
from khhf.models import (
    Call,
    Feedback,
    ReportCountyDaily,
    ReportCountyResult,
    ReportDaily,
    ReportDailyResult,
    ReportManagerDaily,
    ReportState,
    ReportTypeDaily,
    ReportTypeResult,
    Task,
    utcnow,
)

from . import N_

# how long after the booked time a call-back still counts as kept
CALLBACK_GRACE = dt.timedelta(minutes=30)
# the call-back windows of missed hotline calls, in hours
MISSED_CALLBACK_HOURS = (1, 4, 24)
FEEDBACK_FAST_SECONDS = 3600
# the longest period a report covers (the page and the export refuse more)
MAX_DAYS = 366
# rows of a drill-down page
DRILL_PAGE = 100

KEYS = ("county_id", "manager_id", "campaign_id", "task_type_id")


@dataclasses.dataclass(frozen=True)
class Counter:
    """One stored figure: counts the source rows where `when` holds, or sums
    `value` over them."""
    name: str
    when: str = "1 = 1"
    value: str | None = None

    def aggregate(self) -> str:
        return f"CASE WHEN {self.when} THEN {self.value or 1} ELSE 0 END"


@dataclasses.dataclass(frozen=True)
class Source:
    """Raw rows one group of figures counts: `rows` is a FROM clause whose
    rows carry `at` (the moment that dates them), `id` (the row drilled
    to), and the bucket columns county_id, manager_id, campaign_id,
    task_type_id."""
    name: str
    kind: str          # what a drill-down lists: 'tasks', 'calls' or 'results'
    rows: str
    counters: tuple[Counter, ...]
    # the bucket columns as raw columns, so a drill-down's filter uses their indexes
    filters: dict = dataclasses.field(default_factory=dict)
    # where `at` is stored: (table, column), for a drill-down's page cursor
    moment: tuple[str, str] = ("calls", "requested_at")

    def sql(self, where: str = "", fence: str = "", joined: bool = False) -> str:
        """The FROM clause, with extra conditions on the raw rows, and an
        optimisation fence (the daily sums: each correlated subquery is then
        run once per row, not once per use). The first result of each call
        (FIRST_RESULT): probed per call, or `joined` (the daily sums)."""
        sql = self.rows.replace("/*where*/", where).replace("/*fence*/", fence)
        for marker, probed, set_based in FIRST_RESULT:
            sql = sql.replace(marker, set_based if joined else probed)
        return sql


# from how many days on a refresh takes the first results joined (for a
# day or two, the timed job's usual period, probing the day's calls is
# faster than a pass over every result: PostgreSQL then reads them all)
JOINED_DAYS = 7

# The first result filed for an outbound call: its moment (fb_at) and its
# channel (fb_channel), the earliest by (created_at, id). Two ways, the same
# values: probed (two index look-ups per call: a drill-down's page reads
# a few hundred calls, and stops when it is full), or joined (the daily
# sums: every result of the period's calls numbered per call in one pass,
# the first kept, one hash join; probing was the largest share of a build
# of millions of calls). (marker in Source.rows, probed, joined)
FIRST_RESULT = (
    ("/*fb_at*/", "(SELECT MIN(f.created_at) FROM feedback f WHERE f.call_id = c.id)",
     "fb.created_at"),
    ("/*fb_channel*/", "(SELECT f.channel FROM feedback f WHERE f.call_id = c.id "
                       "ORDER BY f.created_at, f.id LIMIT 1)", "fb.channel"),
    ("/*fb_join*/", "", """
                 LEFT JOIN (SELECT call_id, created_at, channel FROM (
                     SELECT f.call_id AS call_id, f.created_at AS created_at,
                            f.channel AS channel, ROW_NUMBER() OVER (
                                PARTITION BY f.call_id ORDER BY f.created_at, f.id) AS n
                     FROM feedback f JOIN calls fc ON fc.id = f.call_id
                     WHERE fc.direction = 'outbound' AND fc.requested_at >= :lo
                           AND fc.requested_at < :hi) ranked
                     WHERE n = 1) fb ON fb.call_id = c.id"""),
)


def _dialect_sql(dialect: str) -> dict:
    """The two expressions SQLite and PostgreSQL write differently."""
    if dialect == "sqlite":
        return dict(
            # whole seconds from b to a (each truncated to the second)
            secs=lambda a, b: f"(CAST(strftime('%s', {a}) AS INTEGER) - "
                              f"CAST(strftime('%s', {b}) AS INTEGER))",
            # a timestamp plus n minutes, written as SQLAlchemy stores them
            plus=lambda ts, minutes: f"(strftime('%Y-%m-%d %H:%M:%f', {ts}, "
                                     f"'+{int(minutes)} minutes') || '000')")
    return dict(
        secs=lambda a, b: f"CAST(EXTRACT(EPOCH FROM date_trunc('second', {a})) - "
                          f"EXTRACT(EPOCH FROM date_trunc('second', {b})) AS INTEGER)",
        plus=lambda ts, minutes: f"({ts} + INTERVAL '{int(minutes)} minutes')")


@functools.lru_cache(maxsize=4)
def sources(dialect: str) -> tuple[Source, ...]:
    """Every source and its counters, in SQL for `dialect`."""
    d = _dialect_sql(dialect)
    fb_secs = d["secs"]("fb_at", "COALESCE(end_at, answer_at)")
    answered_fb = "answer_at IS NOT NULL AND fb_at IS NOT NULL"
    grace = int(CALLBACK_GRACE.total_seconds() // 60)
    # a missed call is called back within h hours when the first outbound
    # call to its customer from its end (called_back_at) is that soon: one
    # look-up per missed call for every window
    missed_cb = tuple(Counter(
        f"missed_cb_{h}h",
        f"outcome = '{CallOutcome.MISSED}' AND called_back_at <= {d['plus']('end_at', h * 60)}")
        for h in MISSED_CALLBACK_HOURS)
    called_back_at = (
        f"CASE WHEN c.outcome = '{CallOutcome.MISSED}' THEN (SELECT MIN(o.requested_at) "
        "FROM calls o WHERE o.customer_id = c.customer_id AND o.direction = 'outbound' "
        "AND o.requested_at >= c.end_at AND o.requested_at <= "
        f"{d['plus']('c.end_at', max(MISSED_CALLBACK_HOURS) * 60)}) END")
    return (
        Source("tasks", "tasks", """(
            SELECT t.id AS id, t.created_at AS at,
                   COALESCE(m.county_id, cu.county_id) AS county_id,
                   COALESCE(t.manager_id, 0) AS manager_id,
                   COALESCE(t.campaign_id, 0) AS campaign_id, t.task_type_id AS task_type_id
            FROM tasks t JOIN customers cu ON cu.id = t.customer_id
                 LEFT JOIN managers m ON m.id = t.manager_id
            WHERE t.created_at >= :lo AND t.created_at < :hi/*where*//*fence*/) src""",
               (Counter("tasks_assigned"),),
               dict(county_id="COALESCE(m.county_id, cu.county_id)", manager_id="t.manager_id",
                    campaign_id="t.campaign_id", task_type_id="t.task_type_id"),
               ("tasks", "created_at")),
        Source("outbound", "calls", """(
            SELECT c.id AS id, c.requested_at AS at, COALESCE(c.county_id, 0) AS county_id,
                   COALESCE(c.manager_id, 0) AS manager_id,
                   COALESCE(t.campaign_id, 0) AS campaign_id,
                   COALESCE(t.task_type_id, 0) AS task_type_id,
                   c.answer_at AS answer_at, c.end_at AS end_at, c.talk_seconds AS talk_seconds,
                   /*fb_at*/ AS fb_at, /*fb_channel*/ AS fb_channel
            FROM calls c LEFT JOIN tasks t ON t.id = c.task_id/*fb_join*/
            WHERE c.direction = 'outbound' AND c.requested_at >= :lo
                  AND c.requested_at < :hi/*where*//*fence*/) src""",
               (Counter("calls_out"),
                Counter("calls_connected", "answer_at IS NOT NULL"),
                Counter("talk_seconds", "answer_at IS NOT NULL", "COALESCE(talk_seconds, 0)"),
                Counter("fb_calls", answered_fb),
                Counter("fb_web", f"{answered_fb} AND fb_channel = 'web'"),
                Counter("fb_sms", f"{answered_fb} AND fb_channel = 'sms'"),
                Counter("fb_keypad", f"{answered_fb} AND fb_channel = 'keypad'"),
                Counter("fb_seconds", f"{answered_fb} AND {fb_secs} > 0", fb_secs),
                Counter("fb_within_1h", f"{answered_fb} AND {fb_secs} <= "
                                        f"{FEEDBACK_FAST_SECONDS}")),
               dict(county_id="c.county_id", manager_id="c.manager_id",
                    campaign_id="t.campaign_id", task_type_id="t.task_type_id")),
        Source("results", "results", """(
            SELECT f.id AS id, f.created_at AS at, m.county_id AS county_id,
                   f.manager_id AS manager_id, COALESCE(t.campaign_id, 0) AS campaign_id,
                   t.task_type_id AS task_type_id, rc.is_final AS is_final
            FROM feedback f JOIN managers m ON m.id = f.manager_id
                 JOIN tasks t ON t.id = f.task_id
                 JOIN result_codes rc ON rc.id = f.result_code_id
            WHERE f.created_at >= :lo AND f.created_at < :hi/*where*//*fence*/) src""",
               (Counter("results_filed"),
                Counter("tasks_completed", "is_final")),
               dict(county_id="m.county_id", manager_id="f.manager_id",
                    campaign_id="t.campaign_id", task_type_id="t.task_type_id"),
               ("feedback", "created_at")),
        Source("callbacks", "results", f"""(
            SELECT f.id AS id, f.appointment_at AS at, m.county_id AS county_id,
                   f.manager_id AS manager_id, COALESCE(t.campaign_id, 0) AS campaign_id,
                   t.task_type_id AS task_type_id,
                   CASE WHEN EXISTS (
                       SELECT 1 FROM calls c WHERE c.task_id = f.task_id
                       AND c.direction = 'outbound' AND c.requested_at >= f.created_at
                       AND c.requested_at <= {d['plus']('f.appointment_at', grace)})
                   THEN 1 ELSE 0 END AS kept
            FROM feedback f JOIN managers m ON m.id = f.manager_id
                 JOIN tasks t ON t.id = f.task_id
            WHERE f.appointment_at >= :lo AND f.appointment_at < :hi/*where*//*fence*/) src""",
               (Counter("callbacks_due"),
                Counter("callbacks_kept", "kept = 1")),
               dict(county_id="m.county_id", manager_id="f.manager_id",
                    campaign_id="t.campaign_id", task_type_id="t.task_type_id"),
               ("feedback", "appointment_at")),
        Source("hotline", "calls", f"""(
            SELECT c.id AS id, c.requested_at AS at, COALESCE(c.county_id, 0) AS county_id,
                   COALESCE(c.manager_id, 0) AS manager_id, 0 AS campaign_id,
                   0 AS task_type_id, c.outcome AS outcome, c.end_at AS end_at,
                   {called_back_at} AS called_back_at
            FROM calls c
            WHERE c.direction = 'inbound' AND c.requested_at >= :lo
                  AND c.requested_at < :hi/*where*//*fence*/) src""",
               (Counter("hotline_calls"),
                Counter("hotline_desk", f"outcome = '{CallOutcome.DESK}'"),
                Counter("hotline_mobile", f"outcome = '{CallOutcome.MOBILE}'"),
                Counter("hotline_group", f"outcome LIKE '{CallOutcome.GROUP}%'"),
                Counter("hotline_missed", f"outcome = '{CallOutcome.MISSED}'"),
                *missed_cb),
               dict(county_id="c.county_id", manager_id="c.manager_id",
                    campaign_id="0", task_type_id="0")),
    )


COUNTERS = tuple(c.name for s in sources("sqlite") for c in s.counters)


def _counter(dialect: str, name: str) -> tuple[Source, Counter]:
    for source in sources(dialect):
        for counter in source.counters:
            if counter.name == name:
                return source, counter
    raise KeyError(name)


# -- what a report is about ----------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Filter:
    """What a report is about: a period of local days (inclusive) and any of
    a county, a manager, a campaign, a task type (None: all)."""
    start: dt.date
    end: dt.date
    county_id: int | None = None
    manager_id: int | None = None
    campaign_id: int | None = None
    task_type_id: int | None = None

    def __post_init__(self):
        if self.end < self.start:
            raise ValueError("the period ends before it starts")
        if (self.end - self.start).days >= MAX_DAYS:
            raise ValueError(f"a report covers at most {MAX_DAYS} days")

    def keys(self) -> dict:
        return {k: getattr(self, k) for k in KEYS if getattr(self, k) is not None}

    @property
    def days(self) -> list[dt.date]:
        return [self.start + dt.timedelta(days=i) for i in range((self.end - self.start).days + 1)]


def day_bounds(timezone: str, day: dt.date) -> tuple[dt.datetime, dt.datetime]:
    """The local day `day` as naive UTC [start, end)."""
    return (local_time.day_start(day, timezone),
            local_time.day_start(day + dt.timedelta(days=1), timezone))


def _bind(sql: str, **types) -> TextClause:
    stmt = text(sql)
    return stmt.bindparams(*(bindparam(k, type_=t) for k, t in types.items()))


# -- building the daily sums ---------------------------------------------------------

def _fence(dialect: str) -> str:
    """A LIMIT/OFFSET that keeps a subquery from being merged into its
    query (both databases would copy its correlated subqueries into every
    expression that uses their results, and run each copy)."""
    return " LIMIT -1 OFFSET 0" if dialect == "sqlite" else " OFFSET 0"


def _grouped(dialect: str, day: str = ":day", joined: bool = False) -> str:
    """SELECT of the sums per day and bucket from the raw rows of [:lo, :hi):
    `day` is the day's SQL, :day (one day) or an expression of `at` (the
    rows' moment; a period, _day_sql); `joined`: each call's first result
    from one pass over the period's results (FIRST_RESULT; long periods)."""
    parts = []
    for source in sources(dialect):
        mine = {c.name: c for c in source.counters}
        cols = ", ".join(f"{mine[n].aggregate() if n in mine else '0'} AS {n}" for n in COUNTERS)
        parts.append(f"SELECT {day} AS day, county_id, manager_id, campaign_id, task_type_id, "
                     f"{cols} FROM {source.sql(fence=_fence(dialect), joined=joined)}")
    sums = ", ".join(f"SUM({n}) AS {n}" for n in COUNTERS)
    return (f"SELECT day, COALESCE(county_id, 0) AS county_id, manager_id, campaign_id, "
            f"COALESCE(task_type_id, 0) AS task_type_id, {sums} "
            f"FROM ({' UNION ALL '.join(parts)}) u "
            f"GROUP BY day, COALESCE(county_id, 0), manager_id, campaign_id, "
            f"COALESCE(task_type_id, 0)")


def _results(day: str = ":day") -> str:
    """SELECT of the results per day, bucket and result code (as _grouped;
    `day` of f.created_at)."""
    return (
        f"SELECT day, county_id, manager_id, campaign_id, task_type_id, result_code_id, "
        f"COUNT(*) AS results FROM (SELECT {day} AS day, m.county_id AS county_id, "
        "f.manager_id AS manager_id, COALESCE(t.campaign_id, 0) AS campaign_id, "
        "t.task_type_id AS task_type_id, f.result_code_id AS result_code_id "
        "FROM feedback f JOIN managers m ON m.id = f.manager_id "
        "JOIN tasks t ON t.id = f.task_id WHERE f.created_at >= :lo AND f.created_at < :hi) r "
        "GROUP BY day, county_id, manager_id, campaign_id, task_type_id, result_code_id")


def _offsets(timezone: str, lo: dt.datetime, hi: dt.datetime
             ) -> list[tuple[dt.datetime, int]]:
    """The zone's UTC offsets over [lo, hi) (naive UTC): [(from, seconds)],
    the first from lo, each next one from the exact second it changes."""
    zone = local_time.zone(timezone)

    def offset(at: dt.datetime) -> int:
        delta = at.replace(tzinfo=dt.UTC).astimezone(zone).utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0
    out = [(lo, offset(lo))]
    at = lo
    while at < hi:
        step = min(at + dt.timedelta(hours=1), hi)
        if offset(step) != out[-1][1]:
            a, b = at, step  # offset(a) is the current one, offset(b) the next
            while b - a > dt.timedelta(seconds=1):
                mid = a + (b - a) / 2
                a, b = (mid, b) if offset(mid) == out[-1][1] else (a, mid)
            out.append((b.replace(microsecond=0), offset(b)))
        at = step
    return out


def _day_sql(dialect: str, offsets, column: str = "at") -> tuple[str, dict]:
    """The local day of `column` (naive UTC) as SQL, by the zone's offsets
    over the period (a local day is [day_start(d), day_start(d + 1)), so a
    moment's day is the date of the moment plus its zone's offset then),
    and its parameters (the moments the offset changes)."""
    def date_of(seconds: int) -> str:
        if dialect == "sqlite":
            return f"date({column}, '{seconds:+d} seconds')"
        return f"CAST({column} + INTERVAL '{seconds} seconds' AS DATE)"
    if len(offsets) == 1:
        return date_of(offsets[0][1]), {}
    params, whens = {}, []
    for i, (start, _seconds) in enumerate(offsets[1:], 1):
        params[f"offset_from_{i}"] = start
        whens.append(f"WHEN {column} < :offset_from_{i} THEN {date_of(offsets[i - 1][1])}")
    return f"CASE {' '.join(whens)} ELSE {date_of(offsets[-1][1])} END", params


def _rollups():
    """Each roll-up: (its table, the finest table it sums, its keys, the
    columns summed). `refresh` builds them from this and `check` compares them."""
    return ((ReportCountyDaily, ReportDaily, ("county_id",), COUNTERS),
            (ReportManagerDaily, ReportDaily, ("county_id", "manager_id"), COUNTERS),
            (ReportTypeDaily, ReportDaily, ("county_id", "task_type_id"), COUNTERS),
            (ReportCountyResult, ReportDailyResult, ("county_id", "result_code_id"),
             ("results",)),
            (ReportTypeResult, ReportDailyResult,
             ("county_id", "task_type_id", "result_code_id"), ("results",)))


# every table a refresh rebuilds, the finest first
REFRESHED = (ReportDaily, ReportDailyResult, *(r[0] for r in _rollups()))


def refresh_statements(dialect: str, timezone: str, start: dt.date, end: dt.date
                       ) -> list[tuple[str, TextClause, dict]]:
    """What `refresh` runs after clearing the days, in order: (the table it
    fills, the INSERT, its parameters). Set-based: one statement per table
    over the whole period, grouped by day (each row's local day computed in
    SQL, _day_sql), not a statement per day."""
    lo, hi = day_bounds(timezone, start)[0], day_bounds(timezone, end)[1]
    changes = _offsets(timezone, lo, hi)
    day, offsets = _day_sql(dialect, changes)
    result_day, _ = _day_sql(dialect, changes, "f.created_at")
    moments = {k: DateTime() for k in offsets}
    params = {"lo": lo, "hi": hi, **offsets}
    out = [
        ("report_daily", _bind(
            f"INSERT INTO report_daily (day, {', '.join(KEYS)}, {', '.join(COUNTERS)}) "
            f"{_grouped(dialect, day, joined=(end - start).days >= JOINED_DAYS)}",
            lo=DateTime(), hi=DateTime(), **moments), params),
        ("report_daily_results", _bind(
            "INSERT INTO report_daily_results (day, county_id, manager_id, campaign_id, "
            f"task_type_id, result_code_id, results) {_results(result_day)}",
            lo=DateTime(), hi=DateTime(), **moments), params)]
    out += [(model.__tablename__, _bind(
        f"INSERT INTO {model.__tablename__} (day, {', '.join(keys + names)}) "
        f"SELECT day, {', '.join(keys)}, {', '.join(f'SUM({n})' for n in names)} "
        f"FROM {fine.__tablename__} WHERE day >= :start AND day <= :end "
        f"GROUP BY day, {', '.join(keys)}",
        start=Date(), end=Date()), {"start": start, "end": end})
        for model, fine, keys, names in _rollups()]
    return out


# What refresh sets for its own transaction on PostgreSQL. jit: PostgreSQL
# compiles each of these large statements to machine code when its
# estimated cost is high (seconds of LLVM for each, more than it saves
# here, and again for every one-day rebuild of the timed job). work_mem:
# the hash tables of the grouping (a row per day and bucket: 2,300,000
# for 271 days of 10,000,000 calls) and of the joins in memory, not
# spilled to temporary files in batches (the default is 4 MB); a limit
# per hash or sort, used only as far as a period needs it.
PG_SETTINGS = {"jit": "off", "work_mem": "512MB"}


def refresh(session: Session, timezone: str, start: dt.date, end: dt.date) -> int:
    """Rebuild the daily sums of the local days start..end (inclusive) from
    the raw rows; returns the buckets written. Idempotent; the caller
    commits. Set-based (refresh_statements): the first build of 271 days is
    one pass over the raw rows."""
    dialect = session.get_bind().dialect.name
    if dialect == "postgresql":
        for name, value in PG_SETTINGS.items():
            session.execute(text(f"SET LOCAL {name} = '{value}'"))
    for model in REFRESHED:
        session.execute(delete(model).where(model.day >= start, model.day <= end))
    written = 0
    for table, stmt, params in refresh_statements(dialect, timezone, start, end):
        # Session.execute returns a CursorResult for DML, typed as a plain Result
        rows = session.execute(stmt, params).rowcount  # type: ignore[attr-defined]
        written = rows if table == ReportDaily.__tablename__ else written
    return written


def check(session: Session, timezone: str, start: dt.date, end: dt.date
          ) -> list[tuple[dt.date, str, int, int]]:
    """Compare the stored daily sums of start..end with a fresh computation
    from the raw rows: the differences as (day, bucket and figure, stored,
    direct); empty when every sum equals its direct count."""
    dialect = session.get_bind().dialect.name
    direct_sql = _bind(_grouped(dialect), day=Date(), lo=DateTime(), hi=DateTime())
    results_sql = _bind(_results(), day=Date(), lo=DateTime(), hi=DateTime())
    wrong: list[tuple[dt.date, str, int, int]] = []
    day = start
    while day <= end:
        lo, hi = day_bounds(timezone, day)
        p = {"day": day, "lo": lo, "hi": hi}
        for model, sql, names, extra in (
                (ReportDaily, direct_sql, COUNTERS, ()),
                (ReportDailyResult, results_sql, ("results",), ("result_code_id",))):
            keys = (*KEYS, *extra)
            direct = {tuple(getattr(r, k) for k in keys): r for r in session.execute(sql, p)}
            stored = {tuple(getattr(r, k) for k in keys): r for r in session.scalars(
                select(model).where(model.day == day))}
            wrong += _differences(day, keys, names, stored, direct)
        # the roll-ups against the finest sums
        for model, fine, keys, names in _rollups():
            cols = [getattr(fine, k) for k in keys]
            direct = {tuple(r[:len(keys)]): r for r in session.execute(
                select(*cols, *[func.sum(getattr(fine, n)).label(n) for n in names])
                .where(fine.day == day).group_by(*cols))}
            stored = {tuple(getattr(r, k) for k in keys): r for r in session.scalars(
                select(model).where(model.day == day))}
            wrong += _differences(day, keys, names, stored, direct)
        day += dt.timedelta(days=1)
    return wrong


def _differences(day, keys, names, stored, direct) -> list:
    out = []
    for key in direct.keys() | stored.keys():
        for name in names:
            a = int(getattr(stored[key], name)) if key in stored else 0
            b = int(getattr(direct[key], name) or 0) if key in direct else 0
            if a != b:
                out.append((day, f"{dict(zip(keys, key))} {name}", a, b))
    return out


def refresh_due(session: Session, timezone: str, now: dt.datetime | None = None
                ) -> tuple[dt.date, dt.date] | None:
    """Rebuild the days touched since the last refresh (all days, the first
    time); returns the days rebuilt (first, last), or None when there are
    no rows at all. The caller commits."""
    now = now or utcnow()
    state = session.get(ReportState, 1)
    last = dict(call=session.scalar(select(func.max(Call.id))) or 0,
                task=session.scalar(select(func.max(Task.id))) or 0,
                feedback=session.scalar(select(func.max(Feedback.id))) or 0)
    if state is None:
        moments = [session.scalar(select(func.min(Call.requested_at))),
                   session.scalar(select(func.min(Task.created_at))),
                   session.scalar(select(func.min(Feedback.appointment_at)))]
    else:
        # calls still on at the last refresh end later: a day back covers them
        moments = [state.refreshed_at - dt.timedelta(days=1),
                   session.scalar(select(func.min(Call.requested_at))
                                  .where(Call.id > state.last_call_id)),
                   session.scalar(select(func.min(Task.created_at))
                                  .where(Task.id > state.last_task_id))]
        for column in (Feedback.created_at, Feedback.appointment_at):
            moments.append(session.scalar(select(func.min(column))
                                          .where(Feedback.id > state.last_feedback_id)))
        moments.append(session.scalar(select(func.min(Call.requested_at)).join(
            Feedback, Feedback.call_id == Call.id).where(Feedback.id > state.last_feedback_id)))
    known = [m for m in moments if m is not None]
    if not known:
        return None
    # a new call may call back a missed call, or keep a call-back, from before it
    since = min(known) - dt.timedelta(hours=max(MISSED_CALLBACK_HOURS)) - CALLBACK_GRACE
    first = local_time.today(timezone, since)
    today = local_time.today(timezone, now)
    refresh(session, timezone, first, max(first, today))
    if state is None:
        state = ReportState(id=1, refreshed_at=now)
        session.add(state)
    state.refreshed_at = now
    state.last_call_id, state.last_task_id = last["call"], last["task"]
    state.last_feedback_id = last["feedback"]
    session.flush()
    return first, max(first, today)


def refreshed_at(session: Session) -> dt.datetime | None:
    """When the daily sums were last rebuilt (naive UTC), or None."""
    return session.scalar(select(ReportState.refreshed_at).where(ReportState.id == 1))


# -- reading the reports -------------------------------------------------------------

@dataclasses.dataclass
class Figures:
    """The sums of one row of a report, with the rates derived from them."""
    counts: dict

    def __getattr__(self, name):
        try:
            return self.__dict__["counts"][name]
        except KeyError:
            raise AttributeError(name) from None

    @staticmethod
    def _ratio(a, b):
        return a / b if b else None

    @property
    def connect_rate(self):
        return self._ratio(self.calls_connected, self.calls_out)

    @property
    def completion_rate(self):
        return self._ratio(self.tasks_completed, self.tasks_assigned)

    @property
    def feedback_rate(self):
        return self._ratio(self.fb_calls, self.calls_connected)

    @property
    def feedback_within_1h_rate(self):
        return self._ratio(self.fb_within_1h, self.calls_connected)

    @property
    def feedback_avg_minutes(self):
        ratio = self._ratio(self.fb_seconds, self.fb_calls)
        return None if ratio is None else ratio / 60

    @property
    def talk_avg_seconds(self):
        return self._ratio(self.talk_seconds, self.calls_connected)

    @property
    def callback_kept_rate(self):
        return self._ratio(self.callbacks_kept, self.callbacks_due)

    def value(self, key: str):
        return getattr(self, key)


# What a report shows, in order: (key, label, kind, the counter it drills to).
# kind: count | rate | decimal (an average). One list for the page, the CSV and the XLSX.
FIGURES = (
    ("tasks_assigned", N_("Tasks assigned"), "count", "tasks_assigned"),
    ("calls_out", N_("Calls placed"), "count", "calls_out"),
    ("calls_connected", N_("Calls connected"), "count", "calls_connected"),
    ("connect_rate", N_("Connect rate"), "rate", "calls_connected"),
    ("tasks_completed", N_("Tasks completed"), "count", "tasks_completed"),
    ("completion_rate", N_("Completion rate"), "rate", "tasks_completed"),
    ("results_filed", N_("Results filed"), "count", "results_filed"),
    ("fb_calls", N_("Connected calls with a result"), "count", "fb_calls"),
    ("feedback_rate", N_("Feedback rate"), "rate", "fb_calls"),
    ("fb_web", N_("Results by web"), "count", "fb_web"),
    ("fb_sms", N_("Results by SMS"), "count", "fb_sms"),
    ("fb_keypad", N_("Results by keypad"), "count", "fb_keypad"),
    ("feedback_avg_minutes", N_("Average time to result (min)"), "decimal", "fb_calls"),
    ("feedback_within_1h_rate", N_("Result within 1 hour"), "rate", "fb_within_1h"),
    ("talk_avg_seconds", N_("Average talk time (s)"), "decimal", "calls_connected"),
    ("callbacks_due", N_("Call-backs booked"), "count", "callbacks_due"),
    ("callbacks_kept", N_("Call-backs kept"), "count", "callbacks_kept"),
    ("callback_kept_rate", N_("Call-backs kept rate"), "rate", "callbacks_kept"),
    ("hotline_calls", N_("Hotline calls"), "count", "hotline_calls"),
    ("hotline_desk", N_("Answered at the desk"), "count", "hotline_desk"),
    ("hotline_mobile", N_("Answered on the mobile"), "count", "hotline_mobile"),
    ("hotline_group", N_("Answered by the group"), "count", "hotline_group"),
    ("hotline_missed", N_("Missed hotline calls"), "count", "hotline_missed"),
    ("missed_cb_1h", N_("Missed, called back within 1 h"), "count", "missed_cb_1h"),
    ("missed_cb_4h", N_("Missed, called back within 4 h"), "count", "missed_cb_4h"),
    ("missed_cb_24h", N_("Missed, called back within 24 h"), "count", "missed_cb_24h"),
)
FIGURE_KEYS = tuple(f[0] for f in FIGURES)


def _table(flt: Filter, by_manager: bool = False):
    """The coarsest table of daily sums that still has the filter's columns
    (and the manager's, for a ranking)."""
    per_manager = by_manager or flt.manager_id is not None
    if flt.campaign_id is not None or (flt.task_type_id is not None and per_manager):
        return ReportDaily
    if flt.task_type_id is not None:
        return ReportTypeDaily
    if per_manager:
        return ReportManagerDaily
    return ReportCountyDaily


def _where(flt: Filter, model) -> list:
    conds = [model.day >= flt.start, model.day <= flt.end]
    conds += [getattr(model, k) == v for k, v in flt.keys().items()]
    return conds


def _sums(model):
    return [func.coalesce(func.sum(getattr(model, n)), 0).label(n) for n in COUNTERS]


def _figures(row) -> Figures:
    return Figures({n: int(getattr(row, n) or 0) for n in COUNTERS})


def summary(session: Session, flt: Filter) -> Figures:
    """The figures of the whole period."""
    model = _table(flt)
    return _figures(session.execute(select(*_sums(model)).where(*_where(flt, model))).one())


def trend(session: Session, flt: Filter) -> list[tuple[dt.date, Figures]]:
    """The figures of each day of the period (days without rows: zeros)."""
    model = _table(flt)
    rows = {r.day: _figures(r) for r in session.execute(
        select(model.day, *_sums(model)).where(*_where(flt, model)).group_by(model.day))}
    empty = Figures(dict.fromkeys(COUNTERS, 0))
    return [(day, rows.get(day, empty)) for day in flt.days]


def ranking(session: Session, flt: Filter, by: str = "feedback_rate"
            ) -> list[tuple[int, Figures]]:
    """(manager id, figures) for every manager with figures in the period,
    best `by` first (ties: more connected calls first, then lower id)."""
    model = _table(flt, by_manager=True)
    rows = [(r.manager_id, _figures(r)) for r in session.execute(
        select(model.manager_id, *_sums(model)).where(*_where(flt, model), model.manager_id != 0)
        .group_by(model.manager_id))]
    rows.sort(key=lambda r: (-(r[1].value(by) or 0), -r[1].calls_connected, r[0]))
    return rows


def results_by_code(session: Session, flt: Filter) -> list[tuple[int, int]]:
    """(result code id, results filed with it) in the period, most first."""
    results_of: dict[type, type[ReportCountyResult | ReportTypeResult | ReportDailyResult]] = {
        ReportCountyDaily: ReportCountyResult, ReportTypeDaily: ReportTypeResult}
    model = results_of.get(_table(flt), ReportDailyResult)
    rows = session.execute(
        select(model.result_code_id, func.sum(model.results)).where(*_where(flt, model))
        .group_by(model.result_code_id)).all()
    return sorted(((code, int(n)) for code, n in rows), key=lambda r: (-r[1], r[0]))


# -- the rows behind a figure --------------------------------------------------------

def drill_kind(figure: str) -> str:
    """What the rows behind `figure` are: 'tasks', 'calls' or 'results'."""
    counter = dict((f[0], f[3]) for f in FIGURES)[figure]
    return _counter("sqlite", counter)[0].kind


def _drill_sql(dialect: str, flt: Filter, figure: str, order: str, before: bool = False) -> str:
    """The ids a figure counts, ordered by their moment, then id: the order
    of the time indexes (calls (county_id | manager_id, requested_at),
    tasks (created_at), ...), so a page is read from the period's end (or
    start) through an index and stops when full, however many rows the
    period has. With `before`, only the rows after the row :before in that
    order (the next page)."""
    counter_name = dict((f[0], f[3]) for f in FIGURES)[figure]
    source, counter = _counter(dialect, counter_name)
    where = "".join(f" AND {source.filters[k]} = :{k}" for k in flt.keys())
    after = ""
    if before:
        table, column = source.moment
        cursor = f"(SELECT {column} FROM {table} WHERE id = :before)"
        after = f" AND (at < {cursor} OR (at = {cursor} AND id < :before))"
    return (f"SELECT id FROM {source.sql(where=where)} WHERE {counter.when}{after} "
            f"ORDER BY at {order}, id {order}")


def _drill_params(timezone: str, flt: Filter, day: dt.date | None) -> dict:
    start, end = (day, day) if day else (flt.start, flt.end)
    return {"lo": day_bounds(timezone, start)[0], "hi": day_bounds(timezone, end)[1],
            **flt.keys()}


def drill_ids(session: Session, timezone: str, flt: Filter, figure: str,
              before: int | None = None, limit: int = DRILL_PAGE,
              day: dt.date | None = None) -> list[int]:
    """The ids of the rows (see drill_kind) that `figure` counts, newest
    first (by the moment that dates them, then id), `limit` of them after
    the row `before` (the last id of the previous page); `day` narrows to
    one day."""
    sql = _drill_sql(session.get_bind().dialect.name, flt, figure, "DESC",
                     before=before is not None)
    stmt = _bind(sql + " LIMIT :limit", lo=DateTime(), hi=DateTime(), limit=Integer())
    params = _drill_params(timezone, flt, day)
    params.update(limit=limit, **({"before": before} if before is not None else {}))
    return list(session.scalars(stmt, params))


def drill_batches(session: Session, timezone: str, flt: Filter, figure: str,
                  day: dt.date | None = None, size: int = 2000):
    """Every id drill_ids would page through, oldest first, in lists of
    `size`, from one query read as it goes (a server-side cursor on
    PostgreSQL): for exports of any size in bounded memory."""
    sql = _drill_sql(session.get_bind().dialect.name, flt, figure, "ASC")
    stmt = _bind(sql, lo=DateTime(), hi=DateTime())
    result = session.execute(stmt, _drill_params(timezone, flt, day),
                             execution_options={"stream_results": True, "yield_per": size})
    for part in result.scalars().partitions(size):
        yield list(part)
