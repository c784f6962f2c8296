"""Reports at scale: 10,000,000 call rows and 2,000,000 tasks over 100
counties and 5,000 managers; every report's p95, on SQLite and PostgreSQL;
and a one-month XLSX export of about 1,000,000 call rows, with its peak RSS.

    python3 -m bench.reports [--db sqlite,postgresql] [--scale 1.0] [--runs 20]
                             [--days 270] [--no-export] [--only-drill] [--by-day]
                             [--quick] [--keep] [--load-only] [--reuse URL]
                             [--explain MODES]

--quick: scale 0.05 (500,000 calls), the first build of the daily sums
set-based and then day by day (same rows, compared), the check; no
report timings, no export; its last line is the build's time.

--keep leaves the loaded database (and prints its URL); --reuse URL runs
on such a database without loading it again (its daily sums emptied
first): to iterate on the build at full size.

Method. A database made from schema.sql, filled in SQL (generate_series on
PostgreSQL, a recursive CTE on SQLite; secondary indexes dropped during the
load and made again after, PostgreSQL's unique and foreign key constraints
too, each then checked in one pass; then VACUUM ANALYZE, ANALYZE on SQLite): 100 counties, 5,000 managers
(each with a user), two campaigns per county (return visit, marketing),
2,000,000 customers with one task each, created evenly over --days days
(default 270); 10,000,000 calls, 90 % outbound (about 4.5 attempts per
task, after the task was made, 60 % answered, talk 5-305 s) and 10 %
hotline calls (50 % desk, 15 % mobile, 15 % group, 20 % missed); a result
for 70 % of the answered calls, filed 0-2 h after the call, by web, SMS
or keypad, a quarter of them booking a call-back the next day. --scale
multiplies every count but the counties (managers at least 100).

Then, timed: the first build of the daily sums (khhf.services.reports.
refresh over every day: set-based, one statement per table over the
period; with --by-day, then again as a refresh of each day alone, the
rows compared), one day rebuilt (what the timed job does every
few minutes), and `check` on three days (the sums equal direct counts
over the raw rows). Each report is a function of khhf.services.reports,
the same call the page makes; --runs runs each, over a random one-month
period (and county / manager / campaign) each time: p50 and p95 in ms.
The export is the drill-down XLSX of every outbound call in one month
(GET /reports/drill.xlsx?figure=calls_out as an administrator, through
the app in a child process, the response read in chunks and thrown
away); its wall time, rows, bytes and the child's peak RSS (ru_maxrss),
against the same child's RSS before the request.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import delete, select, text  # noqa: E402

from khhf import config, db, local_time  # noqa: E402
from khhf.models import Campaign, ReportDaily  # noqa: E402
from khhf.services import reports  # noqa: E402
from simkit import factories  # noqa: E402

ZONE = "Asia/Shanghai"
START = dt.datetime(2026, 1, 1, 16, 0)  # 2 January, local midnight
ROOT = Path(__file__).resolve().parent.parent


def database(kind: str, workdir: Path, keep: bool = False):
    """(url, engine, cleanup) for a fresh database of `kind`; with `keep`,
    cleanup leaves it and says where it is (for --reuse)."""
    def kept():
        engine.dispose()
        where = engine.url.database if kind == "postgresql" else url
        print(f"  kept for --reuse: {where}")
    if kind == "sqlite":
        url = f"sqlite:///{workdir / 'reports.db'}"
        engine = db.make_engine(url)
        return url, engine, kept if keep else engine.dispose
    admin_url = os.environ.get("KHHF_TEST_PG_URL")
    if not admin_url:
        raise SystemExit("bench.reports: set KHHF_TEST_PG_URL (a user who may CREATE DATABASE)")
    admin = db.make_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"khhf_bench_reports_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = admin.url.set(database=name).render_as_string(hide_password=False)
    engine = db.make_engine(url)
    if keep:
        admin.dispose()
        return url, engine, kept

    def cleanup():
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    return url, engine, cleanup


class Sql:
    """The few expressions the two databases write differently."""

    def __init__(self, pg: bool):
        self.pg = pg

    def insert(self, table: str, n: int, select_sql: str) -> str:
        """INSERT INTO table SELECT ... FROM a series g(i) = 1..n."""
        if self.pg:
            return f"INSERT INTO {table} {select_sql.format(g='generate_series(1, %d) AS g(i)' % n)}"
        return (f"WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) "
                f"INSERT INTO {table} {select_sql.format(g='s AS g')}")

    def ts(self, seconds: str) -> str:
        """START plus a whole number of seconds, stored as the app stores times."""
        if self.pg:
            return f"(TIMESTAMP '{START}' + ({seconds}) * INTERVAL '1 second')"
        return (f"(strftime('%Y-%m-%d %H:%M:%f', '{START}', '+' || ({seconds}) || ' seconds')"
                f" || '000')")

    def plus(self, ts: str, seconds: str) -> str:
        if self.pg:
            return f"({ts} + ({seconds}) * INTERVAL '1 second')"
        return (f"(strftime('%Y-%m-%d %H:%M:%f', {ts}, '+' || ({seconds}) || ' seconds')"
                f" || '000')")

    @staticmethod
    def hash(expr: str, salt: int) -> str:
        """A deterministic pseudo-random 0..999,982 from an integer."""
        return f"((({expr}) * 2654435761 + {salt * 40503}) % 999983)"


def secondary_indexes(conn, pg: bool) -> list[tuple[str, str]]:
    if pg:
        rows = conn.execute(text("SELECT indexname, indexdef FROM pg_indexes WHERE "
                                 "schemaname = 'public' AND indexname LIKE 'ix\\_%'"))
    else:
        rows = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'index' "
                                 "AND name LIKE 'ix\\_%' ESCAPE '\\'"))
    return [(r[0], r[1]) for r in rows]


def constraints(conn) -> list[tuple[str, str, str]]:
    """(table, name, definition) of every unique and foreign key constraint
    (PostgreSQL), the unique ones first: the order to make them in."""
    rows = conn.execute(text(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE contype IN ('u', 'f') AND connamespace = 'public'::regnamespace "
        "ORDER BY contype DESC, conname"))
    return [(r[0], r[1], r[2]) for r in rows]


def fill(engine, scale: float, days: int) -> dict:
    """The generated history; returns its sizes."""
    pg = engine.dialect.name == "postgresql"
    q = Sql(pg)
    counties = 100
    managers = max(100, round(5000 * scale))
    tasks = round(2_000_000 * scale)
    calls = round(10_000_000 * scale)
    out_calls = calls * 9 // 10
    in_calls = calls - out_calls
    span = days * 86400
    with db.unit_of_work(db.session_factory(engine)) as s:
        revisit = factories.task_type(s)   # codes 1..4: 1, 2 final; 3, 4 try again
        marketing = factories.task_type(s, "marketing", "营销", codes=(
            ("1", "营销成功", True, True), ("2", "拒绝", False, True),
            ("6", "预约再拨", False, False)))
        assert (revisit.id, marketing.id) == (1, 2)
    steps = []
    with engine.begin() as conn:
        dropped = secondary_indexes(conn, pg)
        for name, _ddl in dropped:
            conn.execute(text(f"DROP INDEX {name}"))
        # PostgreSQL checks a foreign key with a query per inserted row (four
        # per call): the load made them again after, each checked in one pass
        keys = constraints(conn) if pg else []
        for table, name, _definition in reversed(keys):
            conn.execute(text(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"'))
    county_of = "((({m}) - 1) % 100 + 1)"
    manager_of_task = "((({t}) - 1) % " + str(managers) + " + 1)"
    statements = [
        ("counties", q.insert("counties (id, code, name)", counties,
                              "SELECT i, 'c' || i, '县区' || i FROM {g}")),
        ("users", q.insert("users (id, username, password_hash, display_name, role, county_id)",
                           managers, "SELECT i, 'm' || i, '-', '经理' || i, 'manager', "
                           f"{county_of.format(m='i')} FROM {{g}}")),
        ("managers", q.insert("managers (id, user_id, county_id, employee_no, status)", managers,
                              f"SELECT i, i, {county_of.format(m='i')}, 'E' || i, 'active' "
                              "FROM {g}")),
        ("campaigns", q.insert(
            "campaigns (id, county_id, task_type_id, name, status, starts_on)", 2 * counties,
            "SELECT i, (i - 1) % 100 + 1, (i - 1) / 100 + 1, '活动' || i, 'active', "
            "'2026-01-01' FROM {g}")),
        ("customers", q.insert(
            "customers (id, phone, name, county_id, manager_id)", tasks,
            f"SELECT i, CAST(13000000000 + i AS VARCHAR(20)), '', "
            f"{county_of.format(m=manager_of_task.format(t='i'))}, "
            f"{manager_of_task.format(t='i')} FROM {{g}}")),
        ("tasks", q.insert(
            "tasks (id, campaign_id, task_type_id, customer_id, manager_id, status, "
            "created_at, updated_at)", tasks,
            f"SELECT i, {county_of.format(m=manager_of_task.format(t='i'))} + 100 * (i % 2), "
            f"1 + i % 2, i, {manager_of_task.format(t='i')}, "
            f"CASE WHEN {q.hash('i', 1)} % 100 < 40 THEN 'done' ELSE 'pending' END, "
            f"{q.ts(f'CAST(i AS BIGINT) * {span} / {tasks}')}, "
            f"{q.ts(f'CAST(i AS BIGINT) * {span} / {tasks}')} FROM {{g}}")),
    ]
    # outbound: call i is about task i * tasks / out_calls, placed after it was made
    task_expr = f"(1 + (CAST(i AS BIGINT) - 1) * {tasks} / {out_calls})"
    at = f"CAST(i AS BIGINT) * {span} / {out_calls} + {q.hash('i', 2)} % 3600"
    answered = f"{q.hash('i', 3)} % 100 < 60"
    talk = f"(5 + {q.hash('i', 4)} % 300)"
    statements.append(("calls (outbound)", q.insert(
        "calls (id, direction, task_id, customer_id, manager_id, county_id, customer_number, "
        "state, requested_at, answer_at, end_at, outcome, talk_seconds)", out_calls,
        f"SELECT i, 'outbound', {task_expr}, {task_expr}, {manager_of_task.format(t=task_expr)}, "
        f"{county_of.format(m=manager_of_task.format(t=task_expr))}, "
        f"CAST(13000000000 + {task_expr} AS VARCHAR(20)), 'ended', {q.ts(at)}, "
        f"CASE WHEN {answered} THEN {q.ts(at + ' + 20')} END, "
        f"CASE WHEN {answered} THEN {q.ts(at + ' + 20 + ' + talk)} ELSE {q.ts(at + ' + 30')} END, "
        f"CASE WHEN {answered} THEN 'answered' WHEN {q.hash('i', 5)} % 2 = 0 THEN 'busy' "
        f"ELSE 'no_answer' END, CASE WHEN {answered} THEN {talk} END FROM {{g}}")))
    customer = f"(1 + {q.hash('i', 6)} % {tasks})"
    in_at = f"CAST(i AS BIGINT) * {span} / {in_calls}"
    pick = f"{q.hash('i', 7)} % 100"
    statements.append(("calls (hotline)", q.insert(
        "calls (id, direction, customer_id, manager_id, county_id, customer_number, state, "
        "requested_at, end_at, outcome, talk_seconds)", in_calls,
        f"SELECT {out_calls} + i, 'inbound', {customer}, {manager_of_task.format(t=customer)}, "
        f"{county_of.format(m=manager_of_task.format(t=customer))}, "
        f"CAST(13000000000 + {customer} AS VARCHAR(20)), 'ended', {q.ts(in_at)}, "
        f"{q.ts(in_at + ' + 60')}, CASE WHEN {pick} < 50 THEN 'desk' WHEN {pick} < 65 THEN "
        f"'mobile' WHEN {pick} < 80 THEN 'group:8001' ELSE 'missed' END, "
        f"CASE WHEN {pick} < 80 THEN 40 END FROM {{g}}")))
    code = ("CASE WHEN c.task_id % 2 = 0 THEN 1 + c.id % 4 ELSE 5 + c.id % 3 END")
    filed = q.plus("c.end_at", f"{q.hash('c.id', 8)} % 7200")
    statements.append(("feedback", (
        "INSERT INTO feedback (task_id, call_id, manager_id, result_code_id, channel, note, "
        "created_at, appointment_at) "
        f"SELECT c.task_id, c.id, c.manager_id, {code}, CASE c.id % 3 WHEN 0 THEN 'web' "
        f"WHEN 1 THEN 'sms' ELSE 'keypad' END, '', {filed}, "
        f"CASE WHEN {code} IN (4, 7) THEN {q.plus(filed, '86400')} END "
        f"FROM calls c WHERE c.direction = 'outbound' AND c.answer_at IS NOT NULL "
        f"AND {q.hash('c.id', 9)} % 100 < 70")))
    for label, sql in statements:
        t0 = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(text(sql))
        steps.append((label, time.perf_counter() - t0))
    t0 = time.perf_counter()
    with engine.begin() as conn:
        if pg:  # the sorts of the index builds in memory (64 MB by default)
            conn.execute(text("SET LOCAL maintenance_work_mem = '1GB'"))
        for _name, ddl in dropped:
            conn.execute(text(ddl))
        for table, name, definition in keys:
            conn.execute(text(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}'))
        if pg:  # identity columns continue after the generated ids
            for table in ("counties", "users", "managers", "campaigns", "customers", "tasks",
                          "calls"):
                conn.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                                  f"(SELECT max(id) FROM {table}))"))
    steps.append(("indexes, keys", time.perf_counter() - t0))
    t0 = time.perf_counter()
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        # VACUUM on PostgreSQL: the rows' hint bits and visibility map set
        # now, as in a database whose history is old, not by the first build
        conn.execute(text("VACUUM ANALYZE" if pg else "ANALYZE"))
    steps.append(("vacuum, analyze" if pg else "analyze", time.perf_counter() - t0))
    with engine.connect() as conn:
        sizes = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                 for t in ("managers", "tasks", "calls", "feedback")}
    return dict(sizes=sizes, steps=steps, days=days)


REPORT_TABLES = ("report_daily", "report_daily_results", "report_county_daily",
                 "report_manager_daily", "report_type_daily", "report_county_results",
                 "report_type_results", "report_state")


def reused(engine) -> dict:
    """A database a --keep run loaded, its daily sums emptied; its sizes."""
    pg = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        if pg:
            conn.execute(text(f"TRUNCATE {', '.join(REPORT_TABLES)}"))
        else:
            for table in REPORT_TABLES:
                conn.execute(text(f"DELETE FROM {table}"))
        conn.execute(text("DELETE FROM users WHERE username = 'bench-admin'"))
    with engine.connect() as conn:
        sizes = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar()
                 for t in ("managers", "tasks", "calls", "feedback")}
    return dict(sizes=sizes, steps=[], days=None)


def percentile(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def time_reports(engine, days: int, runs: int, seed: int = 1, only_drill: bool = False
                 ) -> list[tuple[str, float, float]]:
    """(report, p50 ms, p95 ms) over `runs` random one-month periods each
    (with only_drill, the drill-downs alone: they read the raw rows)."""
    rng = random.Random(seed)
    first_day = local_time.today(ZONE, START)
    factory = db.session_factory(engine)
    with factory() as s:
        counties = list(s.scalars(select(Campaign.county_id).distinct()))
        campaigns = list(s.scalars(select(Campaign.id)))
        managers = list(range(1, s.scalar(text("SELECT max(id) FROM managers")) + 1))

    def month():
        start = first_day + dt.timedelta(days=rng.randrange(max(1, days - 31)))
        return start, start + dt.timedelta(days=29)

    cases = [
        ("all counties: summary", lambda s, a, b: reports.summary(s, reports.Filter(a, b))),
        ("all counties: daily trend", lambda s, a, b: reports.trend(s, reports.Filter(a, b))),
        ("all counties: ranking of every manager",
         lambda s, a, b: reports.ranking(s, reports.Filter(a, b))),
        ("all counties: outcome rates",
         lambda s, a, b: reports.results_by_code(s, reports.Filter(a, b))),
        ("county page: summary + trend + ranking + outcomes", lambda s, a, b: page(
            s, reports.Filter(a, b, county_id=rng.choice(counties)))),
        ("campaign page: summary + trend + ranking + outcomes", lambda s, a, b: page(
            s, reports.Filter(a, b, campaign_id=rng.choice(campaigns)))),
        ("task type page: summary + trend + ranking + outcomes", lambda s, a, b: page(
            s, reports.Filter(a, b, task_type_id=rng.choice((1, 2))))),
        ("manager page: summary + trend + outcomes", lambda s, a, b: page(
            s, reports.Filter(a, b, manager_id=rng.choice(managers)), ranking=False)),
        ("drill-down: every county's connected calls, first 100",
         lambda s, a, b: reports.drill_ids(s, ZONE, reports.Filter(a, b), "calls_connected")),
        ("drill-down: a county's connected calls, first 100", lambda s, a, b: reports.drill_ids(
            s, ZONE, reports.Filter(a, b, county_id=rng.choice(counties)), "calls_connected")),
        ("drill-down: a manager's missed hotline calls", lambda s, a, b: reports.drill_ids(
            s, ZONE, reports.Filter(a, b, manager_id=rng.choice(managers)), "hotline_missed")),
    ]
    if only_drill:
        cases = [c for c in cases if c[0].startswith("drill-down")]
    out = []
    for label, call in cases:
        samples = []
        for n in range(runs + 1):
            a, b = month()
            with factory() as s:
                t0 = time.perf_counter()
                call(s, a, b)
                elapsed = (time.perf_counter() - t0) * 1000
            if n:  # the first run warms the cache
                samples.append(elapsed)
        out.append((label, statistics.median(samples), percentile(samples, 95)))
    return out


def page(s, flt, ranking=True):
    """What the report page asks for."""
    reports.summary(s, flt)
    reports.trend(s, flt)
    if ranking:
        reports.ranking(s, flt)
    reports.results_by_code(s, flt)


EXPORT_CHILD = """
import resource, sys, time
from khhf import config
from simkit.web import log_in_as
from webui import create_app
app = create_app(config.load(sys.argv[1]), {"TESTING": True})
client = app.test_client()
log_in_as(client, app, "bench-admin")
client.get("/login")
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
response = client.get(sys.argv[2], buffered=False)
size = 0
for chunk in response.response:
    size += len(chunk)
response.close()
elapsed = time.perf_counter() - t0
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(response.status_code, size, elapsed, before, after)
"""


def time_export(url: str, engine, workdir: Path, days: int) -> dict:
    """The one-month drill-down XLSX of outbound calls, in a child process."""
    from khhf.services.accounts import hash_password
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO users (username, password_hash, display_name, role) "
                          "VALUES ('bench-admin', :h, '管理员', 'admin')"),
                     {"h": hash_password("bench-password-1")})
    first_day = local_time.today(ZONE, START)
    # the month with about 1,000,000 outbound calls: the whole span scaled to 30 days
    start = first_day + dt.timedelta(days=days // 2)
    end = start + dt.timedelta(days=29)
    with db.session_factory(engine)() as s:
        rows = reports.summary(s, reports.Filter(start, end)).calls_out
    settings = config.write_new(workdir / "khhf.conf", home=workdir, database_url=url)
    assert settings.database_url == url
    path = f"/reports/drill.xlsx?figure=calls_out&start={start}&end={end}"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", EXPORT_CHILD, str(workdir / "khhf.conf"), path],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    if out.returncode != 0:
        raise SystemExit(f"export child failed:\n{out.stderr[-3000:]}")
    status, size, elapsed, before, after = out.stdout.split()[-5:]
    return dict(status=int(status), rows=rows, bytes=int(size), seconds=float(elapsed),
                rss_before_mb=int(before) / 1024, rss_peak_mb=int(after) / 1024)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--db", default="sqlite,postgresql")
    p.add_argument("--scale", type=float, default=1.0)
    p.add_argument("--days", type=int, default=270)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--no-export", action="store_true")
    p.add_argument("--only-drill", action="store_true",
                   help="load, then time the drill-downs only (no daily sums, no export)")
    p.add_argument("--by-day", action="store_true",
                   help="also build the sums day by day (a refresh per day, as before the "
                        "set-based build) and compare: same rows, and the time ratio")
    p.add_argument("--quick", action="store_true",
                   help="scale 0.05, the build (set-based and day by day) and the check only: "
                        "a few minutes")
    p.add_argument("--keep", action="store_true",
                   help="keep the loaded database and print its URL (for --reuse)")
    p.add_argument("--load-only", action="store_true",
                   help="load (with --keep: for --reuse), build nothing")
    p.add_argument("--reuse", metavar="URL",
                   help="skip the load: the database a --keep run left (its URL, or its name "
                        "on KHHF_TEST_PG_URL's server; same --days); its "
                        "daily sums are emptied first, so the build is a first build again")
    p.add_argument("--explain", metavar="MODES",
                   help="after the build, EXPLAIN ANALYZE each statement of the build and of "
                        "a one-day rebuild (PostgreSQL), with refresh's settings changed by "
                        "each mode in turn: comma-separated, each a space-separated list, "
                        "e.g. ',jit=on,work_mem=4MB jit=on' ('' as refresh runs); and print "
                        "the first mode's plan of the largest")
    args = p.parse_args(argv)
    if args.quick:
        args.scale, args.runs, args.no_export, args.by_day = 0.05, 0, True, True
    builds: dict[str, tuple[float, int, float | None]] = {}
    print(f"# reports benchmark (scale {args.scale}, {args.days} days, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at start)")
    if args.reuse and "://" not in args.reuse:  # a database name on KHHF_TEST_PG_URL's server
        admin_url = os.environ.get("KHHF_TEST_PG_URL")
        if not admin_url:
            raise SystemExit("bench.reports: --reuse NAME needs KHHF_TEST_PG_URL (or give a URL)")
        args.reuse = db.make_engine(admin_url).url.set(database=args.reuse).render_as_string(
            hide_password=False)
    kinds = [db.make_engine(args.reuse).dialect.name] if args.reuse else args.db.split(",")
    for kind in kinds:
        with tempfile.TemporaryDirectory(prefix="khhf-bench-reports-") as tmp:
            workdir = Path(tmp)
            if args.reuse:
                url, engine = args.reuse, db.make_engine(args.reuse)
                cleanup = engine.dispose
            else:
                home = Path(tempfile.mkdtemp(prefix="khhf-bench-reports-")) if args.keep \
                    else workdir
                url, engine, cleanup = database(kind, home, keep=args.keep)
            try:
                if args.reuse:
                    made = reused(engine)
                else:
                    db.create_schema(engine)
                    made = fill(engine, args.scale, args.days)
                print(f"\n## {kind}: {made['sizes']}")
                for label, seconds in made["steps"]:
                    print(f"  load {label:<18} {seconds:8.1f} s")
                if args.load_only:
                    continue
                if args.only_drill:
                    print(f"  {'report (one month)':<58} {'p50 ms':>8} {'p95 ms':>8}")
                    for label, p50, p95 in time_reports(engine, args.days, args.runs,
                                                        only_drill=True):
                        print(f"  {label:<58} {p50:8.1f} {p95:8.1f}")
                    continue
                first_day = local_time.today(ZONE, START)
                last_day = first_day + dt.timedelta(days=args.days)
                t0 = time.perf_counter()
                with db.unit_of_work(db.session_factory(engine)) as s:
                    buckets = reports.refresh(s, ZONE, first_day, last_day)
                build = time.perf_counter() - t0
                by_day = None
                if args.by_day:
                    by_day = build_by_day(engine, first_day, last_day)
                builds[kind] = (build, args.days + 1, by_day)
                if kind == "postgresql":
                    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                        c.execute(text("ANALYZE report_daily"))
                        c.execute(text("ANALYZE report_daily_results"))
                mid = first_day + dt.timedelta(days=args.days // 2)
                t0 = time.perf_counter()
                with db.unit_of_work(db.session_factory(engine)) as s:
                    reports.refresh(s, ZONE, mid, mid)
                one_day = time.perf_counter() - t0
                t0 = time.perf_counter()
                with db.session_factory(engine)() as s:
                    wrong = reports.check(s, ZONE, mid - dt.timedelta(days=1),
                                          mid + dt.timedelta(days=1))
                    rows = s.scalar(select(text("count(*)")).select_from(ReportDaily))
                check = time.perf_counter() - t0
                print(f"  daily sums: first build {build:.1f} s ({buckets:,} rows over "
                      f"{args.days + 1} days), one day rebuilt {one_day * 1000:.0f} ms, "
                      f"check of 3 days {check:.1f} s: "
                      + ("sums equal direct counts" if not wrong else f"{len(wrong)} DIFFER"))
                print(f"  report_daily rows: {rows:,}")
                if by_day is not None:
                    print(f"  day by day (one refresh per day, the same rows): {by_day:.1f} s; "
                          f"set-based / day by day {build / by_day:.2f}")
                if args.explain is not None and kind == "postgresql":
                    explain(engine, first_day, last_day, mid, args.explain.split(","))
                if args.runs:
                    print(f"  {'report (one month)':<58} {'p50 ms':>8} {'p95 ms':>8}")
                    for label, p50, p95 in time_reports(engine, args.days, args.runs):
                        print(f"  {label:<58} {p50:8.1f} {p95:8.1f}")
                if not args.no_export:
                    e = time_export(url, engine, workdir, args.days)
                    print(f"  export: one month's outbound calls to XLSX: {e['rows']:,} rows, "
                          f"{e['bytes'] / 1e6:.1f} MB in {e['seconds']:.1f} s "
                          f"(HTTP {e['status']}); peak RSS {e['rss_peak_mb']:.0f} MB "
                          f"(the app before the request: {e['rss_before_mb']:.0f} MB)")
                if wrong:
                    return 1
            finally:
                cleanup()
        print(f"  (load average now {os.getloadavg()[0]:.1f})")
    if not builds:
        return 0
    print("report sums first build " + " ".join(
        f"{kind}={build:.1f}s" + (f" (day by day {by_day:.1f}s)" if by_day else "")
        for kind, (build, _n, by_day) in builds.items())
        + f" for {args.days + 1} days at scale {args.scale:g} ("
        + " ".join(f"{kind} {build / n:.2f}s per day" for kind, (build, n, _b) in builds.items())
        + ")")
    return 0


def explain(engine, first_day: dt.date, last_day: dt.date, day: dt.date,
            modes: list[str]) -> None:
    """EXPLAIN ANALYZE of each statement refresh runs (PostgreSQL), over
    the whole period and over one day, with refresh's settings and each
    mode's changes to them ('' none, 'jit=on', 'jit=on work_mem=4MB'...);
    then the plan of the largest in the first mode. Rolled back."""
    plan: list[str] = []
    for mode in modes:
        settings = dict(reports.PG_SETTINGS)
        settings.update(kv.split("=", 1) for kv in mode.split())
        for label, a, b in (("first build", first_day, last_day), ("one day", day, day)):
            with engine.connect() as conn, conn.begin() as tx:
                for name, value in settings.items():
                    conn.execute(text(f"SET LOCAL {name} = '{value}'"))
                for model in reports.REFRESHED:
                    conn.execute(delete(model).where(model.day >= a, model.day <= b))
                parts = []
                for table, stmt, params in reports.refresh_statements("postgresql", ZONE, a, b):
                    sql = text("EXPLAIN (ANALYZE, BUFFERS) " + stmt.text).bindparams(
                        *stmt._bindparams.values())
                    lines = [r[0] for r in conn.execute(sql, params)]
                    total = sum(float(x.split(":")[1].split()[0]) for x in lines
                                if x.startswith(("Planning Time", "Execution Time")))
                    parts.append(f"{table} {total:.0f}")
                    if table == "report_daily" and label == "first build" and not plan:
                        plan = lines
                tx.rollback()
            print(f"  EXPLAIN ANALYZE {' '.join(f'{k}={v}' for k, v in settings.items())}, "
                  f"{label}, ms: {', '.join(parts)}")
    print("  plan of the first build's report_daily:")
    for line in plan:
        print("    " + line)


def build_by_day(engine, first_day: dt.date, last_day: dt.date) -> float:
    """The first build as it was made before the set-based one: a refresh
    of each day alone, in one transaction; seconds. Its rows must equal the
    set-based build's (compared here, table by table)."""
    tables = [t for t in REPORT_TABLES if t != "report_state"]

    def snapshot(s):
        return {t: sorted(map(tuple, s.execute(text(f"SELECT * FROM {t}")).all()))
                for t in tables}
    factory = db.session_factory(engine)
    with factory() as s:
        whole = snapshot(s)
    t0 = time.perf_counter()
    with db.unit_of_work(factory) as s:
        day = first_day
        while day <= last_day:
            reports.refresh(s, ZONE, day, day)
            day += dt.timedelta(days=1)
    seconds = time.perf_counter() - t0
    with factory() as s:
        if snapshot(s) != whole:
            raise SystemExit("bench.reports: the day-by-day build differs from the set-based one")
    return seconds


if __name__ == "__main__":
    sys.exit(main())
