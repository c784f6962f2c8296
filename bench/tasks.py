"""Task distribution and the manager's task list at scale: 1,000,000 tasks,
500 managers; SQLite and PostgreSQL.

    python3 -m bench.tasks [--db sqlite,postgresql] [--tasks 1000000]
                           [--managers 500] [--clients 50] [--seconds 20]

Method. A database made from schema.sql; one county with --managers active
managers (employee numbers M10001...) and 10 % more departed ones; --tasks
customers, each owned by a manager (one in ten by a departed one), and one
campaign with one pending task per customer, nobody's yet (a list just
imported), inserted in SQL (bench data, like bench/workspace_list.py). Then, each timed from the service call to
the COMMIT, through khhf.services.distribution.commit (the code the web UI
and `khhf tasks distribute --commit` run: plan in Python, moves written
through a temporary table filled by COPY / executemany and one
UPDATE ... FROM):
  1. average over all active managers: every task gets a manager (the
     worst case: 1,000,000 rows updated),
  2. auto: tasks go to their customers' own active managers, the departed
     managers' customers to the least loaded (again nearly every row),
  3. average again: only the tasks above the equal quota move.
The preview (distribution.plan alone) is timed too, and the database's
floor: one bare UPDATE giving every task another manager, computed in SQL
(1 + (id + 7) % managers; no plan, no moves table), rolled back. Each
with its wall time and its CPU time (the bench process's, which on SQLite
includes the database engine, plus on PostgreSQL the server backend's, read
from /proc): on a shared host the wall time includes waiting for a core.

Task list: --clients threads, each a different manager (about 2,000 tasks
each after the distributions), each running the query of the manager's
task list in a loop for --seconds, one at a time, with a think time
uniform in [0.5, 1.5] x --think s (default 2 s, as bench/workspace_list.py;
--think 0 is saturation): khhf.services.workspace.page(session,
manager_id, "todo") when that module exists (the workspace page's query),
else main's manager home query (open tasks by priority, 200 rows, with the
customer). p50/p95/p99 per query, in ms.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import select  # noqa: E402
from sqlalchemy.orm import selectinload  # noqa: E402

from khhf import db  # noqa: E402
from khhf.models import Campaign, Task  # noqa: E402
from khhf.services import distribution, tasks  # noqa: E402


def database(kind: str, workdir: Path):
    """(engine, cleanup) for a fresh database of `kind`."""
    if kind == "sqlite":
        engine = db.make_engine(f"sqlite:///{workdir / 'tasks.db'}", pool_size=64,
                                max_overflow=16)
        return engine, engine.dispose
    url = os.environ.get("KHHF_TEST_PG_URL")
    if not url:
        raise SystemExit("bench.tasks: set KHHF_TEST_PG_URL (a user who may CREATE DATABASE)")
    admin = db.make_engine(url, isolation_level="AUTOCOMMIT")
    name = f"khhf_bench_tasks_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine = db.make_engine(admin.url.set(database=name).render_as_string(hide_password=False),
                            pool_size=64, max_overflow=16)

    def cleanup():
        engine.dispose()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
    return engine, cleanup


def fill(engine, tasks: int, managers: int) -> int:
    """The county, managers, customers, campaign and tasks; returns the campaign id."""
    departed = managers // 10
    total = managers + departed
    pg = engine.dialect.name == "postgresql"
    series = ("SELECT g AS i FROM generate_series(1, {n}) g" if pg else
              "WITH RECURSIVE s(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM s WHERE i < {n}) "
              "SELECT i FROM s")
    db.create_schema(engine)
    with engine.begin() as conn:
        def x(sql):  # psycopg takes % for a placeholder
            return conn.exec_driver_sql(sql.replace("%", "%%") if pg else sql)
        x("INSERT INTO counties (id, code, name) VALUES (1, 'bench', 'Bench')")
        x("INSERT INTO task_types (id, code, name, max_attempts) VALUES (1, 'revisit', '回访', 3)")
        x("INSERT INTO result_codes (task_type_id, code, label) VALUES (1, '1', '回访成功')")
        x("INSERT INTO users (id, username, password_hash, display_name, role, county_id) "
          f"SELECT i, 'm' || i, '-', 'M' || i, 'manager', 1 FROM ({series.format(n=total)}) q")
        x("INSERT INTO managers (id, user_id, county_id, employee_no, status, departed_at) "
          "SELECT i, i, 1, 'M' || CAST(10000 + i AS TEXT), "
          f"CASE WHEN i > {managers} THEN 'departed' ELSE 'active' END, "
          f"CASE WHEN i > {managers} THEN CURRENT_TIMESTAMP END "
          f"FROM ({series.format(n=total)}) q")
        # one customer in ten belongs to a departed manager
        x("INSERT INTO customers (id, phone, name, county_id, manager_id) "
          "SELECT i, CAST(13000000000 + i AS TEXT), 'C' || i, 1, "
          f"CASE WHEN i % 10 = 0 THEN {managers} + 1 + (i / 10) % {max(departed, 1)} "
          f"ELSE 1 + i % {managers} END FROM ({series.format(n=tasks)}) q")
        x("INSERT INTO campaigns (id, county_id, task_type_id, name, status, starts_on) "
          "VALUES (1, 1, 1, 'bench', 'active', CURRENT_DATE)")
        x("INSERT INTO tasks (id, campaign_id, task_type_id, customer_id, manager_id, status) "
          "SELECT id, 1, 1, id, NULL, 'pending' FROM customers")
        if pg:
            for sequence in ("users", "managers", "customers", "tasks"):
                x(f"SELECT setval(pg_get_serial_sequence('{sequence}', 'id'), "
                  f"(SELECT max(id) FROM {sequence}))")
    with engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    return 1


class CpuClock:
    """CPU seconds spent on a piece of work: this process's (for SQLite, the
    database engine's too) plus, on PostgreSQL, the server backend's of the
    session's connection, read from /proc (the server runs on this host).
    On a host shared with other work, wall time includes waiting for a
    core; CPU time does not."""

    def __init__(self, session):
        self.backend = None
        if session.get_bind().dialect.name == "postgresql":
            pid = session.connection().exec_driver_sql("SELECT pg_backend_pid()").scalar()
            self.backend = Path(f"/proc/{pid}/stat")
        self.start = self._now()

    def _now(self) -> float:
        seconds = time.process_time()
        if self.backend is not None and self.backend.exists():
            # utime and stime, fields 14 and 15, after the ")" of the name
            fields = self.backend.read_text().rsplit(")", 1)[1].split()
            seconds += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return seconds

    def elapsed(self) -> float:
        return self._now() - self.start


def timed_distribution(factory, campaign_id, mode, preview=False):
    with factory() as session:
        db.begin_write(session)
        campaign = session.get(Campaign, campaign_id)
        clock = CpuClock(session)
        start = time.perf_counter()
        if preview:
            plan = distribution.plan(session, campaign, mode)
            session.rollback()
        else:
            plan = distribution.commit(session, None, "bench", campaign, mode)
            session.commit()
        return time.perf_counter() - start, clock.elapsed(), plan.moved, plan.total


def bare_update(factory, campaign_id, managers: int) -> tuple[float, float]:
    """The database's own floor for the worst case: one UPDATE giving every
    task of the campaign a manager computed in SQL (no plan, no moves
    table, no audit), timed to its end and rolled back. (wall s, CPU s)"""
    with factory() as session:
        db.begin_write(session)
        pg = session.get_bind().dialect.name == "postgresql"
        percent = "%%" if pg else "%"  # psycopg's placeholders
        clock = CpuClock(session)
        start = time.perf_counter()
        session.connection().exec_driver_sql(
            f"UPDATE tasks SET manager_id = 1 + (id + 7) {percent} {int(managers)}, "
            f"updated_at = CURRENT_TIMESTAMP WHERE campaign_id = {int(campaign_id)}")
        seconds, cpu = time.perf_counter() - start, clock.elapsed()
        session.rollback()
    return seconds, cpu


def list_query():
    """(description, function(session, manager_id)) of the manager's task list."""
    try:
        from khhf.services import workspace
    except ImportError:
        workspace = None
    if workspace is not None and hasattr(workspace, "page"):
        return ("khhf.services.workspace.page(todo)",
                lambda s, m: workspace.page(s, m, "todo"))

    def home(s, m):  # webui/manager.py's home on main
        return s.scalars(select(Task).options(selectinload(Task.customer)).where(
            Task.manager_id == m,
            Task.status.in_(tasks.OPEN))
            .order_by(Task.priority.desc(), Task.id).limit(200)).all()
    return ("main webui/manager.py home (open tasks, 200)", home)


def task_list_load(factory, managers: int, clients: int, seconds: float, think: float):
    name, query = list_query()
    latencies: list[float] = []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def client(manager_id):
        mine = []
        with factory() as session:
            while time.monotonic() < stop:
                t0 = time.perf_counter()
                query(session, manager_id)
                session.rollback()  # a fresh snapshot per request, as a web request has
                mine.append(time.perf_counter() - t0)
                time.sleep(think * random.uniform(0.5, 1.5))
        with lock:
            latencies.extend(mine)
    step = max(1, managers // clients)
    threads = [threading.Thread(target=client, args=(1 + k * step,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    latencies.sort()
    q = statistics.quantiles(latencies, n=100)
    return name, len(latencies), q[49] * 1000, q[94] * 1000, q[98] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--managers", type=int, default=500)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--think", type=float, default=2.0)
    args = parser.parse_args()
    dist_rows, list_rows = [], []
    for kind in args.db.split(","):
        with tempfile.TemporaryDirectory(prefix="khhf-bench-tasks-") as workdir:
            engine, cleanup = database(kind, Path(workdir))
            try:
                t0 = time.perf_counter()
                campaign_id = fill(engine, args.tasks, args.managers)
                print(f"{kind}: {args.tasks:,} tasks made in {time.perf_counter() - t0:.1f} s",
                      flush=True)
                factory = db.session_factory(engine)
                for label, mode, preview in (("average (preview only)", "average", True),
                                             ("average", "average", False),
                                             ("auto", "auto", False),
                                             ("average again", "average", False)):
                    seconds, cpu, moved, total = timed_distribution(factory, campaign_id, mode,
                                                                    preview)
                    dist_rows.append((kind, label, total, moved, seconds, cpu))
                    print(f"  {label}: {seconds:.2f} s, CPU {cpu:.2f} s", flush=True)
                seconds, cpu = bare_update(factory, campaign_id, args.managers)
                dist_rows.append((kind, "floor: bare UPDATE", args.tasks, args.tasks, seconds,
                                  cpu))
                print(f"  floor: {seconds:.2f} s, CPU {cpu:.2f} s", flush=True)
                if args.seconds > 0:
                    list_rows.append((kind, *task_list_load(
                        factory, args.managers, args.clients, args.seconds, args.think)))
            finally:
                cleanup()
    print(f"\nDistribution of {args.tasks:,} tasks over {args.managers} managers "
          "(target <= 10 s)")
    print(f"{'db':<11} {'mode':<24} {'tasks':>10} {'moved':>10} {'seconds':>8} {'CPU s':>7}")
    for kind, label, total, moved, seconds, cpu in dist_rows:
        print(f"{kind:<11} {label:<24} {total:>10,} {moved:>10,} {seconds:>8.2f} {cpu:>7.2f}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"\nManager task list, {args.clients} managers at once, think time {args.think} s "
          "(target p95 < 200 ms)")
    print(f"{'db':<11} {'query':<46} {'requests':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for kind, name, n, p50, p95, p99 in list_rows:
        print(f"{kind:<11} {name:<46} {n:>9,} {p50:>8.1f} {p95:>8.1f} {p99:>8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
