"""The manager's task list under load: 1,000,000 tasks, 50 managers reading
their workspace at once; p50/p95/p99 of the whole HTTP request.

Method: a database made from schema.sql and filled in SQL with --tasks
customers and tasks over --managers managers of one county (tasks per
manager: 60 % never called, 10 % not reached, 5 % with a call-back
appointment, 1 % hotline call-backs, 1 % connected, 23 % done). The web UI
runs in its own process under waitress with 8 threads, as deployed (so the
clients' Python does not share its interpreter lock). 50 client threads
each log in as a different manager over HTTP and, for --seconds, request
their workspace in a loop, one request at a time, with a think time
uniform in [0.5, 1.5] x --think s between requests (default: one run at
10 s, a manager going back to the list between calls, and one at 2 s, five
times that load; --think 0 is the saturation case),
cycling through: the todo tab, its page 2 (keyset cursor from page 1),
the call-back, not-reached and done tabs, and a search by name. Each
request is timed from send to the last byte of the page.

    python3 -m bench.workspace_list [--db sqlite,postgresql] [--tasks 1000000]
"""

from __future__ import annotations

import argparse
import http.cookiejar
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import text  # noqa: E402

from khhf import config, db  # noqa: E402
from khhf.services.accounts import hash_password  # noqa: E402
from simkit.sipp import free_port  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
PASSWORD = "bench-password-1"
# per task: its place k in its manager's list (tasks go round the managers, so
# k = (id - 1) / managers); k % 100 gives status, priority, appointment (hours
# from now). Keyed by id % 100 instead, every task of a manager had one status
# (id and manager both follow id % managers). One home for both SQLs.
_STATUS = ("CASE WHEN {i} % 100 < 60 THEN 'pending' WHEN {i} % 100 < 70 THEN 'not_reached' "
           "WHEN {i} % 100 < 75 THEN 'pending' WHEN {i} % 100 < 76 THEN 'connected' "
           "WHEN {i} % 100 < 77 THEN 'pending' ELSE 'done' END")
SERVE = """
import sys
from waitress import serve
from khhf import config
from webui import create_app
serve(create_app(config.load(sys.argv[1])), host="127.0.0.1", port=int(sys.argv[2]),
      threads=8, _quiet=True)
"""


def seed(engine, tasks: int, managers: int) -> None:
    db.create_schema(engine)
    pg = engine.dialect.name == "postgresql"
    k = f"((id - 1) / {int(managers)})"
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO counties (code, name) VALUES ('bench', 'Bench')"))
        conn.execute(text("INSERT INTO task_types (code, name) VALUES ('revisit', '回访')"))
        secret = hash_password(PASSWORD)
        conn.execute(text("INSERT INTO users (username, password_hash, display_name, role, "
                          "county_id) VALUES (:u, :h, :u, 'manager', 1)"),
                     [{"u": f"m{i}", "h": secret} for i in range(1, managers + 1)])
        conn.execute(text("INSERT INTO managers (user_id, county_id, employee_no) "
                          "VALUES (:i, 1, :e)"),
                     [{"i": i, "e": f"E{i}"} for i in range(1, managers + 1)])
        if pg:
            conn.execute(text(
                "INSERT INTO customers (phone, name, county_id, manager_id) SELECT "
                "'138' || lpad(i::text, 8, '0'), '客户' || i, 1, (i % :m) + 1 "
                "FROM generate_series(0, :n) i"), {"n": tasks - 1, "m": managers})
            appointment = f"now() AT TIME ZONE 'UTC' + (({k} % 48) - 24) * interval '1 hour'"
            created = "timestamp '2026-11-01' + (id / 10) * interval '1 second'"
            updated = "timestamp '2026-11-01' + (id / 5) * interval '1 second'"
        else:
            conn.execute(text(
                "INSERT INTO customers (phone, name, county_id, manager_id) "
                "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < :n) "
                "SELECT printf('138%08d', i), '客户' || i, 1, (i % :m) + 1 FROM s"),
                {"n": tasks - 1, "m": managers})
            appointment = f"datetime('now', (({k} % 48) - 24) || ' hours')"
            created = "datetime('2026-11-01', (id / 10) || ' seconds')"
            updated = "datetime('2026-11-01', (id / 5) || ' seconds')"
        conn.execute(text(
            "INSERT INTO tasks (task_type_id, customer_id, manager_id, status, priority, "
            f"appointment_at, created_at, updated_at) SELECT 1, id, manager_id, "
            f"{_STATUS.format(i=k)}, CASE WHEN {k} % 100 = 76 THEN 5 ELSE 0 END, "
            f"CASE WHEN {k} % 100 BETWEEN 70 AND 74 THEN {appointment} END, {created}, {updated} "
            "FROM customers"))
        if pg:
            conn.execute(text("ANALYZE"))


def percentile(values, p):
    values = sorted(values)
    k = (len(values) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


# log-ins one at a time: they write (last log-in, the audit log), and what is
# measured here is reading
LOG_IN = threading.Lock()
READY: list[str] = []


def client(base: str, username: str, seconds: float, think: float, out: list, errors: list,
           start: threading.Event):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    with LOG_IN:
        html = opener.open(f"{base}/login").read().decode()
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html).group(1)
        opener.open(f"{base}/login", urllib.parse.urlencode(
            {"username": username, "password": PASSWORD, "csrf_token": token}).encode())
    first = opener.open(f"{base}/manager/").read().decode()
    cursor = re.search(r'id="next-page" href="[^"]*after=([^"&]+)', first)
    paths = ["/manager/", "/manager/?tab=callback", "/manager/?tab=not_reached",
             "/manager/?tab=done", "/manager/?q=" + urllib.parse.quote("客户1")]
    if cursor:
        paths.insert(1, "/manager/?after=" + cursor.group(1))
    READY.append(username)
    start.wait()
    deadline = time.monotonic() + seconds
    # readers start spread over one think time, as people do, not in one burst
    time.sleep(random.uniform(0, think))
    i = 0
    while time.monotonic() < deadline:
        path = paths[i % len(paths)]
        i += 1
        t0 = time.perf_counter()
        try:
            with opener.open(base + path) as response:
                body = response.read()
                if response.status != 200 or b'id="tasks"' not in body:
                    errors.append(f"{path}: {response.status}")
        except Exception as error:  # noqa: BLE001 - counted and shown, the run goes on
            errors.append(f"{path}: {error}")
            continue
        out.append(time.perf_counter() - t0)
        if think:
            time.sleep(random.uniform(0.5 * think, 1.5 * think))


def run(label: str, url: str, workdir: Path, args, think: float) -> dict:
    settings = config.write_new(workdir / "khhf.conf", home=workdir, database_url=url)
    port = free_port(kind=1)
    log = open(workdir / "web.log", "wb")  # waitress's queue-depth warnings, errors
    server = subprocess.Popen([sys.executable, "-c", SERVE, str(workdir / "khhf.conf"), str(port)],
                              cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                              stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"{base}/login").read()
                break
            except OSError:
                assert time.monotonic() < deadline, "the web UI did not start"
                time.sleep(0.2)
        latencies, errors, start = [], [], threading.Event()
        READY.clear()
        threads = [threading.Thread(target=client, args=(base, f"m{i + 1}", args.seconds,
                                                         think, latencies, errors, start))
                   for i in range(args.readers)]
        for t in threads:
            t.start()
        while len(READY) < len(threads) and all(t.is_alive() for t in threads):
            time.sleep(0.1)  # every reader logged in and past its first page
        started = time.monotonic()
        start.set()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
    finally:
        server.terminate()
        server.wait(10)
        log.close()
    del settings
    ms = [v * 1000 for v in latencies]
    return {"db": label, "think": think, "requests": len(ms), "errors": len(errors), "rps": len(ms) / elapsed,
            "p50": percentile(ms, 50), "p95": percentile(ms, 95), "p99": percentile(ms, 99),
            "first_error": errors[0] if errors else ""}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.workspace_list",
                                description=__doc__.split("\n")[0])
    p.add_argument("--db", default="sqlite,postgresql")
    p.add_argument("--tasks", type=int, default=1_000_000)
    p.add_argument("--managers", type=int, default=500)
    p.add_argument("--readers", type=int, default=50)
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--think", default="10,2", type=lambda v: [float(x) for x in v.split(",")],
                   help="mean think times between requests, one run each (s)")
    p.add_argument("--pg-url", default=os.environ.get("KHHF_TEST_PG_URL"))
    args = p.parse_args(argv)
    rows = []
    for label in args.db.split(","):
        workdir = Path(tempfile.mkdtemp(prefix=f"khhf-bench-list-{label}-"))
        admin = name = None
        if label == "sqlite":
            url = f"sqlite:///{workdir / 'khhf.db'}"
        else:
            if not args.pg_url:
                p.error("PostgreSQL needs --pg-url or KHHF_TEST_PG_URL")
            admin = db.make_engine(args.pg_url, isolation_level="AUTOCOMMIT")
            name = f"khhf_bench_{uuid.uuid4().hex[:8]}"
            with admin.connect() as conn:
                conn.execute(text(f'CREATE DATABASE "{name}"'))
            url = admin.url.set(database=name).render_as_string(hide_password=False)
        try:
            started = time.monotonic()
            engine = db.make_engine(url)
            seed(engine, args.tasks, args.managers)
            engine.dispose()
            print(f"[{label}] seeded {args.tasks:,} tasks in {time.monotonic() - started:.0f} s",
                  file=sys.stderr)
            for think in args.think:
                rows.append(run(label, url, workdir, args, think))
                print(f"[{label}] {rows[-1]}", file=sys.stderr)
        finally:
            if admin is not None:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
            # the config, the web log and, on SQLite, a database of a million tasks
            shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nManager workspace list: {args.tasks:,} tasks over {args.managers} managers, "
          f"{args.readers} managers reading at once for {args.seconds:g} s each run "
          "(waitress, 8 threads)\n")
    print("db | think s | requests | errors | requests/s | p50 ms | p95 ms | p99 ms")
    print("--- | --- | --- | --- | --- | --- | --- | ---")
    for r in rows:
        print(f"{r['db']} | {r['think']:g} | {r['requests']} | {r['errors']} | {r['rps']:.1f} | "
              f"{r['p50']:.0f} | {r['p95']:.0f} | {r['p99']:.0f}")
    print("\ntarget: p95 < 200 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
