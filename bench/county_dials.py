"""One county's dials at once: dials/s through the number pool, before vs after.

Every dial of a county takes the county's number-pool lock
(khhf.services.number_pool.choose) until its unit of work commits, so a
county's dial rate is about 1 / (time the lock is held). This measures it
without Asterisk: T threads (the web UI serves with 8) each click-to-dial
as their own manager of one county (khhf.services.dialing.request_call in
a writing unit of work, exactly what POST /calls/dial does between asking
the bridge whether the manager is busy and asking it to originate), over a
calls table holding --history earlier calls of today on the pool's numbers
(no caps, so none is refused). Per dial: the unit of work (begin to
commit), the lock held (from the pool's SELECT ... FOR UPDATE on
PostgreSQL, from BEGIN IMMEDIATE on SQLite, to the commit) and the
statements run under it, choose's own thread CPU. The same run measures
the code before the fix (--before, a commit: its khhf package extracted
with `git archive`) and this tree, in alternating subprocesses on fresh
databases, SQLite and PostgreSQL (KHHF_TEST_PG_URL); the load average is
printed beside each.

    python3 -m bench.county_dials [--quick] [--threads 8] [--dials 40] [--history 50000]

Last line: `county_dials after:before dials/s sqlite=R postgresql=R`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# the code before the pool's lock was shortened (issue 21): main at 1c69b4d
BEFORE = "1c69b4d"
NUMBERS = ("13900000000", "13900000002")


def percentile(values, p):
    values = sorted(values)
    if not values:
        return float("nan")
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


# -- the worker: one engine, one version of khhf, in its own process ------------------------

def worker(url: str, threads: int, dials: int, history: int) -> dict:
    from sqlalchemy import event, insert, select
    from sqlalchemy.exc import OperationalError

    import khhf
    from khhf import config, db
    from khhf.models import Call, User, utcnow
    from khhf.services import number_pool
    from khhf.services.dialing import request_call
    from simkit import factories

    engine = db.make_engine(url, pool_size=threads + 2) if url.startswith("postgresql") \
        else db.make_engine(url)
    db.create_schema(engine)
    sessions = db.session_factory(engine)
    settings = config.Settings(home="/nonexistent", database_url=url,
                               calling_window="00:00-24:00")
    now = utcnow()
    tasks: list[tuple[int, int]] = []  # (user id, task id), one manager each
    with db.unit_of_work(sessions) as s:
        county = factories.county(s, "bench", unified=NUMBERS[0], more=NUMBERS[1:])
        for n in county.unified_numbers:
            n.daily_cap = n.hourly_cap = n.concurrent_cap = 0
        for i in range(threads * dials):
            manager = factories.manager(s, county, f"b{i}", desk=str(10000 + i))
            customer = factories.customer(s, county, f"1380{i:07d}", manager)
            tasks.append((manager.user_id, factories.task(s, customer, manager).id))
        county_id = county.id
    # today's earlier calls on the pool's numbers, ended (what choose counts)
    start_of_day = now - dt.timedelta(hours=1)
    rows = [{"direction": "outbound", "county_id": county_id,
             "customer_number": f"1590{k % 20000:07d}", "unified_number": NUMBERS[k % 2],
             "state": "ended", "outcome": "no_answer",
             "requested_at": start_of_day + dt.timedelta(seconds=k * 3000 / max(history, 1))}
            for k in range(history)]
    with db.unit_of_work(sessions) as s:
        for chunk in range(0, len(rows), 5000):
            s.execute(insert(Call), rows[chunk:chunk + 5000])
    del rows

    local = threading.local()
    real_choose = number_pool.choose
    choose_cpu: list[float] = []

    def timed_choose(*args, **kwargs):
        cpu = time.thread_time()
        try:
            return real_choose(*args, **kwargs)
        finally:
            choose_cpu.append(time.thread_time() - cpu)

    number_pool.choose = timed_choose

    @event.listens_for(engine, "after_cursor_execute")
    def locked(conn, cursor, statement, *_):
        # the lock a county's dials queue on is granted: the pool's rows
        # (PostgreSQL), the database's write lock (SQLite, BEGIN IMMEDIATE)
        if getattr(local, "lock_from", 0) is None:
            if "FOR UPDATE" in statement or statement.startswith("BEGIN IMMEDIATE"):
                local.lock_from = time.perf_counter()
        elif getattr(local, "lock_from", None) is not None:
            local.statements += 1  # run while the lock is held
    units: list[float] = []
    held: list[float] = []
    under: list[int] = []  # statements run under the lock, per dial (COMMIT not among them)
    busy: list[str] = []
    other: list[str] = []
    barrier = threading.Barrier(threads)

    def clicker(t: int) -> None:
        barrier.wait()
        for user_id, task_id in tasks[t * dials:(t + 1) * dials]:
            t0 = time.perf_counter()
            local.lock_from, local.statements = None, 0
            try:
                with db.unit_of_work(sessions) as s:
                    user = s.get(User, user_id)
                    request_call(s, settings, user, task_id, live=None)
            except OperationalError as error:
                (busy if db.is_busy(error) else other).append(str(error).splitlines()[0])
                continue
            except Exception as error:  # noqa: BLE001 - counted, shown
                other.append(f"{type(error).__name__}: {str(error).splitlines()[0]}")
                continue
            end = time.perf_counter()
            units.append(end - t0)
            if local.lock_from is not None:
                held.append(end - local.lock_from)
                under.append(local.statements)

    load = os.getloadavg()[0]
    workers = [threading.Thread(target=clicker, args=(t,)) for t in range(threads)]
    t0 = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    wall = time.perf_counter() - t0
    with sessions() as s:
        placed = len(s.scalars(select(Call.id).where(Call.manager_id.is_not(None))).all())
    engine.dispose()
    ms = 1000
    return {"khhf": str(Path(khhf.__file__).parent.parent),
            "dials": len(units), "placed": placed, "busy": len(busy), "errors": other[:3],
            "error_count": len(other), "wall": wall, "rate": len(units) / wall,
            "load": load, "load_after": os.getloadavg()[0],
            "unit_p50": statistics.median(units) * ms, "unit_p95": percentile(units, 95) * ms,
            "held_p50": statistics.median(held) * ms, "held_p95": percentile(held, 95) * ms,
            "under_lock": statistics.median(under), "choose_cpu_p50": statistics.median(choose_cpu) * ms}


# -- the driver ------------------------------------------------------------------------------

def extract(rev: str, into: Path) -> Path:
    """khhf as it was at `rev`, in a directory of its own."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev, "khhf"],
                             check=True, capture_output=True).stdout
    into.mkdir(parents=True)
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def fresh_pg(admin_url: str):
    from sqlalchemy import text

    from khhf import db
    admin = db.make_engine(admin_url, isolation_level="AUTOCOMMIT")
    name = f"khhf_bench_cd_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin.url.set(database=name).render_as_string(hide_password=False)

    def drop():
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return url, drop


def run_one(code_dir: Path | None, url: str, args) -> dict:
    # the khhf package of `code_dir` (before) or of this tree (after)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        str(d) for d in (code_dir, ROOT) if d is not None)}
    # run from code_dir: `-m` puts the working directory first on the path
    out = subprocess.run([sys.executable, "-m", "bench.county_dials", "--worker", url,
                          "--threads", str(args.threads), "--dials", str(args.dials),
                          "--history", str(args.history)],
                         cwd=code_dir or ROOT, env=env, check=True, capture_output=True,
                         text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(result["khhf"]).is_relative_to(code_dir or ROOT), result["khhf"]
    return result


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.county_dials",
                                description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="fewer dials and history (about a minute)")
    p.add_argument("--threads", type=int, default=8, help="clicking threads (waitress: 8)")
    p.add_argument("--dials", type=int, default=40, help="dials per thread")
    p.add_argument("--history", type=int, default=50_000,
                   help="earlier calls of today on the pool's numbers")
    p.add_argument("--rounds", type=int, default=2, help="before/after pairs per engine")
    p.add_argument("--before", default=BEFORE, help="the commit whose khhf is 'before'")
    p.add_argument("--db", default="both", choices=("sqlite", "postgresql", "both"))
    p.add_argument("--pg-url", default=os.environ.get("KHHF_TEST_PG_URL"))
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.threads, args.dials, args.history)))
        return 0
    if args.quick:
        args.dials, args.history, args.rounds = 20, 5_000, 1
    engines = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    if "postgresql" in engines and not args.pg_url:
        print("no PostgreSQL (KHHF_TEST_PG_URL): SQLite only", file=sys.stderr)
        engines.remove("postgresql")
    work = Path(tempfile.mkdtemp(prefix="khhf-bench-cd-"))
    old = extract(args.before, work / "before")
    print(f"county_dials: {args.threads} threads x {args.dials} dials, one county, pool of "
          f"{len(NUMBERS)} numbers without caps, {args.history} earlier calls today; "
          f"before = khhf at {args.before}, after = this tree; {os.cpu_count()} cores")
    print("engine | code | dials/s | placed | unit p50/p95 ms | lock held p50/p95 ms | "
          "statements under it | choose CPU p50 ms | busy | other errors | load 1-min before/after")
    print("--- | --- | --- | --- | --- | --- | --- | --- | --- | --- | ---")
    rates: dict[tuple[str, str], list[float]] = {}
    for engine in engines:
        for rnd in range(args.rounds):
            for label, code in (("before", old), ("after", None)):
                drop = None
                if engine == "sqlite":
                    url = f"sqlite:///{work / f'{label}-{rnd}.db'}"
                else:
                    url, drop = fresh_pg(args.pg_url)
                try:
                    r = run_one(code, url, args)
                finally:
                    if drop:
                        drop()
                rates.setdefault((engine, label), []).append(r["rate"])
                print(f"{engine} | {label} | {r['rate']:.1f} | {r['placed']} | {r['unit_p50']:.1f}/"
                      f"{r['unit_p95']:.1f} | {r['held_p50']:.1f}/{r['held_p95']:.1f} | {r['under_lock']:g} | "
                      f"{r['choose_cpu_p50']:.2f} | {r['busy']} | "
                      f"{r['error_count']}{' ' + '; '.join(r['errors']) if r['errors'] else ''}"
                      f" | {r['load']:.1f}/{r['load_after']:.1f}", flush=True)
    ratios = " ".join(
        f"{e}={statistics.median(rates[(e, 'after')]) / statistics.median(rates[(e, 'before')]):.2f}"
        for e in engines)
    print(f"county_dials after:before dials/s {ratios}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
