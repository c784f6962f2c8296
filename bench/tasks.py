"""Task distribution and the manager's task list at scale: 1,000,000 tasks,
500 managers; SQLite and PostgreSQL; the distribution against the bare
write of the same rows, and the task list while the distribution runs.

    python3 -m bench.tasks [--db sqlite,postgresql] [--tasks 1000000]
                           [--managers 500] [--clients 50] [--seconds 30]
                           [--chunk-rows N] [--quick]

--quick: 200,000 tasks, 500 managers, 50 clients, 10 s of idle list (a
few minutes in all); its last line is the ratio.

Method. A database made from schema.sql; one county with --managers active
managers (employee numbers M10001...) and 10 % more departed ones; --tasks
customers, each owned by a manager (one in ten by a departed one), and one
campaign with one pending task per customer, nobody's yet (a list just
imported), inserted in SQL (bench data, like bench/workspace_list.py). Then,
each in a child process of its own (so the list's clients, threads of this
process, share no interpreter lock with it), timed from the service call to
its last COMMIT, through khhf.services.distribution.commit (the code the web
UI and `khhf tasks distribute --commit` run: plan in Python, moves written
set-based; on PostgreSQL a distribution of more than CHUNK_ROWS moves is a
run written one chunk per transaction, distribution.finish):
  0. the bare write (below), first, then VACUUM (before each step),
  1. average over all active managers: every task gets a manager (the
     worst case: every row updated),
  2. auto: tasks go to their customers' own active managers, the departed
     managers' customers to the least loaded (again nearly every row),
  3. average again: only the tasks above the equal quota move.
The preview (distribution.plan alone) is timed too, and the bare write of
the same rows: one UPDATE giving every task another manager, computed in
SQL (1 + (id + 7) % managers; no plan, no moves, no audit, one
transaction), rolled back. Each with its wall time and its CPU time (the
child's, which on SQLite includes the database engine, plus on PostgreSQL
the server backend's, read from /proc): on a shared host the wall time
includes waiting for a core. The ratio is average's wall time over the
bare write's (auto's too), measured in the same run, and the same of
their CPU times (the fair one on a host shared with other work).

Task list: --clients threads, each a different manager, each running the
query of the manager's task list in a loop, one at a time, with a think
time uniform in [0.5, 1.5] x --think s (default 2 s, as
bench/workspace_list.py; --think 0 is saturation):
khhf.services.workspace.page(session, manager_id, "todo") (the workspace
page's query). They run during each distribution and the bare write
(p95 "during": the requests begun while it ran), then alone for --seconds
after them. p50/p95/p99 per query, in ms.
"""

from __future__ import annotations

import argparse
import multiprocessing
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


def vacuum(engine) -> None:
    """VACUUM ANALYZE tasks on PostgreSQL (dead row versions cleared, hint
    bits set), so each step starts from a clean table; nothing on SQLite."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("VACUUM ANALYZE tasks")


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


def timed_distribution(factory, campaign_id, mode, preview=False, chunk_rows=None):
    with factory() as session:
        db.begin_write(session)
        campaign = session.get(Campaign, campaign_id)
        clock = CpuClock(session)
        start = time.perf_counter()
        if preview:
            plan = distribution.plan(session, campaign, mode)
            session.rollback()
        else:
            plan = distribution.commit(session, None, "bench", campaign, mode,
                                       chunk_rows=chunk_rows)
            session.commit()
            if plan.run_id is not None:
                distribution.finish(session, plan.run_id,
                                    chunk_rows or distribution.CHUNK_ROWS)
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


def _child(url: str, work: str, args: tuple, results) -> None:
    """One timed piece of work in a process of its own (spawned): the
    moment it starts and ends (time.time, comparable across processes) and
    its result."""
    engine = db.make_engine(url)
    try:
        factory = db.session_factory(engine)
        results.put(("start", time.time()))
        if work == "bare":
            out = bare_update(factory, *args)
        else:
            out = timed_distribution(factory, *args)
        results.put(("done", time.time(), out))
    finally:
        engine.dispose()


def in_child(engine, work: str, *args):
    """(start, end, result) of `work` run by _child."""
    url = engine.url.render_as_string(hide_password=False)
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    child = context.Process(target=_child, args=(url, work, args, results))
    child.start()
    _, started = results.get()
    done = results.get()
    child.join()
    if child.exitcode:
        raise SystemExit(f"bench.tasks: the {work} child failed ({child.exitcode})")
    return started, done[1], done[2]


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


class ListLoad:
    """--clients threads polling their managers' task lists until stopped;
    each request's start (time.time) and duration."""

    def __init__(self, factory, managers: int, clients: int, think: float):
        self.name, query = list_query()
        self.samples: list[tuple[float, float]] = []
        self.lock = threading.Lock()
        self.stopping = threading.Event()

        def client(manager_id):
            mine = []
            with factory() as session:
                while not self.stopping.is_set():
                    begun, t0 = time.time(), time.perf_counter()
                    query(session, manager_id)
                    session.rollback()  # a fresh snapshot per request, as a web request has
                    mine.append((begun, time.perf_counter() - t0))
                    self.stopping.wait(think * random.uniform(0.5, 1.5))
            with self.lock:
                self.samples.extend(mine)
        step = max(1, managers // clients)
        self.threads = [threading.Thread(target=client, args=(1 + k * step,))
                        for k in range(clients)]
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join()

    def between(self, start: float, end: float):
        """(requests, p50, p95, p99 in ms) of the requests begun in [start, end]."""
        latencies = sorted(d for begun, d in self.samples if start <= begun <= end)
        if len(latencies) < 2:
            return len(latencies), float("nan"), float("nan"), float("nan")
        q = statistics.quantiles(latencies, n=100)
        return len(latencies), q[49] * 1000, q[94] * 1000, q[98] * 1000


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--tasks", type=int, default=1_000_000)
    parser.add_argument("--managers", type=int, default=500)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--think", type=float, default=2.0)
    parser.add_argument("--chunk-rows", type=int, default=None,
                        help="moves per transaction (default: the service's)")
    parser.add_argument("--quick", action="store_true",
                        help="200,000 tasks and 10 s of idle list: a few minutes")
    args = parser.parse_args()
    if args.quick:
        args.tasks, args.seconds = 200_000, 10
    dist_rows, list_rows = [], []
    ratios: dict[str, dict[str, float]] = {}
    for kind in args.db.split(","):
        with tempfile.TemporaryDirectory(prefix="khhf-bench-tasks-") as workdir:
            engine, cleanup = database(kind, Path(workdir))
            try:
                t0 = time.perf_counter()
                campaign_id = fill(engine, args.tasks, args.managers)
                print(f"{kind}: {args.tasks:,} tasks made in {time.perf_counter() - t0:.1f} s",
                      flush=True)
                factory = db.session_factory(engine)
                seconds, cpu, moved, total = timed_distribution(factory, campaign_id, "average",
                                                                True)
                dist_rows.append((kind, "average (preview only)", total, moved, seconds, cpu))
                load = ListLoad(factory, args.managers, args.clients, args.think)
                wall, cpus, windows = {}, {}, []
                try:
                    for label, work, work_args in (
                            ("bare write (one UPDATE)", "bare", (campaign_id, args.managers)),
                            ("average", "distribution",
                             (campaign_id, "average", False, args.chunk_rows)),
                            ("auto", "distribution",
                             (campaign_id, "auto", False, args.chunk_rows)),
                            ("average again", "distribution",
                             (campaign_id, "average", False, args.chunk_rows))):
                        # the same table for the bare write and the first
                        # distribution: the rolled-back row versions cleared
                        vacuum(engine)
                        started, ended, out = in_child(engine, work, *work_args)
                        if work == "bare":
                            seconds, cpu = out
                            moved = total = args.tasks
                        else:
                            seconds, cpu, moved, total = out
                        wall[label], cpus[label] = seconds, cpu
                        windows.append((label, started, ended))
                        dist_rows.append((kind, label, total, moved, seconds, cpu))
                        print(f"  {label}: {seconds:.2f} s, CPU {cpu:.2f} s", flush=True)
                    windows.append(("nothing else (after)", time.time(),
                                    time.time() + args.seconds))
                    time.sleep(args.seconds)
                finally:
                    load.stop()
                during = {}
                for label, start, end in windows:
                    during[label] = load.between(start, end)
                    list_rows.append((kind, f"during {label}", *during[label]))
                bare, bare_cpu = wall["bare write (one UPDATE)"], cpus["bare write (one UPDATE)"]
                ratios[kind] = {"average": wall["average"] / bare, "auto": wall["auto"] / bare,
                                "average_cpu": cpus["average"] / bare_cpu,
                                "auto_cpu": cpus["auto"] / bare_cpu,
                                "p95": during["average"][2]}
            finally:
                cleanup()
    print(f"\nDistribution of {args.tasks:,} tasks over {args.managers} managers "
          "(target <= 1.1x the bare write)")
    print(f"{'db':<11} {'step':<24} {'tasks':>10} {'moved':>10} {'seconds':>8} {'CPU s':>7}")
    for kind, label, total, moved, seconds, cpu in dist_rows:
        print(f"{kind:<11} {label:<24} {total:>10,} {moved:>10,} {seconds:>8.2f} {cpu:>7.2f}")
    for kind, r in ratios.items():
        print(f"{kind}: average / bare write {r['average']:.2f} (CPU {r['average_cpu']:.2f}), "
              f"auto / bare write {r['auto']:.2f} (CPU {r['auto_cpu']:.2f})")
    print(f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(f"\nManager task list ({list_query()[0]}), {args.clients} managers at once, "
          f"think time {args.think} s (target p95 < 200 ms)")
    print(f"{'db':<11} {'while':<34} {'requests':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}")
    for kind, label, n, p50, p95, p99 in list_rows:
        print(f"{kind:<11} {label:<34} {n:>9,} {p50:>8.1f} {p95:>8.1f} {p99:>8.1f}")
    print("ratio distribution/bare " + " ".join(
        f"{kind}={r['average']:.2f} (CPU {r['average_cpu']:.2f})" for kind, r in ratios.items())
        + "; list p95 during " + " ".join(f"{kind}={r['p95']:.0f} ms"
                                           for kind, r in ratios.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
