"""The SMS result loop's database side: the prompt sweep and reply handling.

The jobs daemon sweeps for due prompts every few seconds, so its cost when
nothing is due (a day of answered calls, most with their result) is what
a site pays all the time; the first sweep after a burst, and the replies,
are the bursts.

Method: a database made from schema.sql, filled in SQL with --managers
managers (each with a mobile) and --calls answered outbound calls each,
ended within the last 24 h; 80 % of them have a result filed (web), the
rest are due. Then, timed:
  sweep (burst)   one sweep of the jobs daemon (Jobs.sms_sweep): queues a
                  prompt for every due call, 10 to a transaction
  sweep (idle)    the next sweep, nothing due (median of 5)
  replies         each manager answers each of its prompts with `1 #ref`,
                  one sms_feedback.receive + commit each (files the
                  result, queues the confirmation)

    python3 -m bench.sms_feedback [--managers 200] [--calls 50] [--db sqlite,postgresql]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import select, text  # noqa: E402

from jobs.scheduler import Jobs  # noqa: E402
from khhf import config, db  # noqa: E402
from khhf.models import SmsMessage  # noqa: E402
from khhf.services import campaigns, sms_feedback  # noqa: E402

RESULT_SHARE = 0.8


def fill(engine, managers: int, calls: int, now: dt.datetime) -> int:
    """Managers, customers, tasks and answered calls; returns the due calls."""
    factory = db.session_factory(engine)
    with db.unit_of_work(factory) as s:
        campaigns.ensure_standard_types(s)
    due = 0
    with engine.begin() as conn:
        x = conn.execute
        type_id = x(text("SELECT id FROM task_types WHERE code = 'revisit'")).scalar()
        code_id = x(text("SELECT id FROM result_codes WHERE task_type_id = :t AND code = '2'"),
                    {"t": type_id}).scalar()
        x(text("INSERT INTO counties (id, code, name) VALUES (1, 'b', '基准县')"))
        x(text("INSERT INTO users (id, username, password_hash, display_name, role, county_id) "
               "VALUES (:id, :u, 'x', :u, 'manager', 1)"),
          [{"id": m, "u": f"m{m}"} for m in range(1, managers + 1)])
        x(text("INSERT INTO managers (id, user_id, county_id, employee_no, mobile, status) "
               "VALUES (:id, :id, 1, :e, :mobile, 'active')"),
          [{"id": m, "e": f"E{m}", "mobile": f"137{m:08d}"} for m in range(1, managers + 1)])
        n = managers * calls
        x(text("INSERT INTO customers (id, phone, county_id, manager_id) "
               "VALUES (:id, :phone, 1, :m)"),
          [{"id": i, "phone": f"138{i:08d}", "m": i % managers + 1} for i in range(1, n + 1)])
        rows, filed = [], []
        for i in range(1, n + 1):
            has_result = (i % 10) < RESULT_SHARE * 10
            ended = now - dt.timedelta(seconds=600 + (i * 7) % 80000)
            rows.append({"id": i, "m": i % managers + 1, "phone": f"138{i:08d}",
                         "status": "done" if has_result else "connected",
                         "ended": ended, "answered": ended - dt.timedelta(seconds=60),
                         "requested": ended - dt.timedelta(seconds=80)})
            if has_result:
                filed.append({"id": i, "m": i % managers + 1, "code": code_id,
                              "at": ended + dt.timedelta(seconds=30)})
            else:
                due += 1
        x(text("INSERT INTO tasks (id, task_type_id, customer_id, manager_id, status, attempts) "
               "VALUES (:id, :t, :id, :m, :status, 1)"), [dict(r, t=type_id) for r in rows])
        x(text("INSERT INTO calls (id, direction, task_id, customer_id, manager_id, county_id, "
               "customer_number, state, requested_at, answer_at, end_at, outcome) VALUES "
               "(:id, 'outbound', :id, :id, :m, 1, :phone, 'ended', :requested, :answered, "
               ":ended, 'answered')"), rows)
        x(text("INSERT INTO feedback (task_id, call_id, manager_id, result_code_id, channel, "
               "created_at) VALUES (:id, :id, :m, :code, 'web', :at)"), filed)
    return due


def run(engine, label: str, managers: int, calls: int) -> dict:
    settings = dataclasses.replace(config.Settings(), sms_prompt_delay_seconds=120)
    now = sms_feedback.utcnow()
    db.create_schema(engine)
    due = fill(engine, managers, calls, now)
    factory = db.session_factory(engine, writer=True)
    # the jobs daemon's own sweep (a reader look, then batches of prompts)
    jobs = Jobs(engine, settings.timezone, settings=settings)
    t0 = time.perf_counter()
    made = jobs.sms_sweep()
    burst = time.perf_counter() - t0
    assert made == due, (made, due)
    idle = []
    for _ in range(5):
        t0 = time.perf_counter()
        assert jobs.sms_sweep() == 0
        idle.append(time.perf_counter() - t0)
    with factory() as s:
        prompts = [(p.peer_number, p.ref) for p in s.scalars(
            select(SmsMessage).where(SmsMessage.kind == "prompt"))]
    t0 = time.perf_counter()
    for mobile, ref in prompts:
        with db.unit_of_work(factory) as s:
            row = sms_feedback.receive(s, mobile, f"1 #{ref}", settings=settings, now=now)
            assert row.reply_outcome == "filed", row.reply_outcome
    replies = time.perf_counter() - t0
    return {"db": label, "calls": managers * calls, "due": due,
            "burst_s": burst, "prompts_per_s": due / burst,
            "idle_ms": statistics.median(idle) * 1000,
            "replies_per_s": len(prompts) / replies}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python3 -m bench.sms_feedback")
    parser.add_argument("--managers", type=int, default=200)
    parser.add_argument("--calls", type=int, default=50, help="answered calls per manager")
    parser.add_argument("--db", default="sqlite,postgresql")
    args = parser.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for which in args.db.split(","):
            if which == "sqlite":
                engine = db.make_engine(f"sqlite:///{tmp}/bench.db")
                results.append(run(engine, "sqlite", args.managers, args.calls))
                engine.dispose()
            elif which == "postgresql":
                url = os.environ.get("KHHF_TEST_PG_URL")
                if not url:
                    print("postgresql: KHHF_TEST_PG_URL not set, skipped", file=sys.stderr)
                    continue
                admin = db.make_engine(url, isolation_level="AUTOCOMMIT")
                name = f"khhf_bench_smsfb_{uuid.uuid4().hex[:8]}"
                with admin.connect() as conn:
                    conn.execute(text(f'CREATE DATABASE "{name}"'))
                engine = db.make_engine(admin.url.set(database=name)
                                        .render_as_string(hide_password=False))
                try:
                    results.append(run(engine, "postgresql", args.managers, args.calls))
                finally:
                    engine.dispose()
                    with admin.connect() as conn:
                        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                    admin.dispose()
    print("| Database | Answered calls (24 h) | Due | Burst sweep | Prompts/s | "
          "Idle sweep | Replies/s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['db']} | {r['calls']} | {r['due']} | {r['burst_s']:.2f} s | "
              f"{r['prompts_per_s']:.0f} | {r['idle_ms']:.0f} ms | {r['replies_per_s']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
