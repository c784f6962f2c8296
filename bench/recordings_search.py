"""Recording review's search (khhf.services.recordings.search) and the
retention job's batch query on a large calls table, SQLite and PostgreSQL.

    python bench/recordings_search.py [--calls 1000000] [--runs 20]

Generates CALLS call rows over 10 counties, one every 30 s back from now,
half of them answered and recorded, then times each search as the page
runs it (51 rows, the page size + 1) and prints p50 and p95 per query.
PostgreSQL: KHHF_TEST_PG_URL (a user that may CREATE DATABASE); without it
only SQLite runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import random
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import insert, text, true  # noqa: E402

from khhf import db  # noqa: E402
from khhf.models import Call, County, utcnow  # noqa: E402
from khhf.services import recordings  # noqa: E402

COUNTIES = 10


def fill(engine, calls: int) -> None:
    now = utcnow()
    rng = random.Random(7)
    with engine.begin() as conn:
        conn.execute(insert(County.__table__), [{"id": i, "code": f"c{i}", "name": f"C{i}"}
                                                for i in range(1, COUNTIES + 1)])
        rows = []
        for i in range(calls):
            at = now - dt.timedelta(seconds=(calls - i) * 30)
            answered = i % 2 == 0
            rows.append(dict(
                direction="inbound" if i % 7 == 0 else "outbound",
                county_id=1 + i % COUNTIES, customer_number=f"138{i % 99_999_999:08d}",
                state="ended", outcome="answered" if answered else "busy", requested_at=at,
                end_at=at + dt.timedelta(seconds=60), pbx_node="main",
                recording_path=f"{at:%Y/%m/%d}/{i}.wav" if answered else None,
                recording_seconds=rng.randint(5, 300) if answered else None))
            if len(rows) == 20_000:
                conn.execute(insert(Call.__table__), rows)
                rows = []
        if rows:
            conn.execute(insert(Call.__table__), rows)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE calls" if engine.dialect.name == "postgresql" else "ANALYZE"))


def queries(now):
    F = recordings.Filters
    county = Call.county_id == 3
    month = dict(since=now - dt.timedelta(days=30), until=now)
    return [
        ("administrator, every county", true(), F(), False),
        ("administrator, page 2", true(), F(), True),
        ("supervisor (one county)", county, F(), False),
        ("supervisor, last 30 days", county, F(**month), False),
        ("supervisor, one day 200 days ago", county, F(
            since=now - dt.timedelta(days=200), until=now - dt.timedelta(days=199)), False),
        ("supervisor, hotline only", county, F(direction="inbound"), False),
        ("supervisor, recordings >= 290 s", county, F(min_seconds=290), False),
        ("supervisor, whole number", county, F(number="13800012342"), False),
        ("administrator, whole number", true(), F(number="13800012342"), False),
        ("supervisor, part of a number, 30 days", county, F(number="4567", **month), False),
        ("supervisor, part of a number, all time", county, F(number="4567"), False),
    ]


def measure(engine, runs: int) -> list[tuple[str, float, float, int]]:
    sessions = db.session_factory(engine)
    now = utcnow()
    out = []
    with sessions() as s:
        recordings.search(s, true(), recordings.Filters(), limit=1)  # connect, warm up
        for label, where, filters, second_page in queries(now):
            after = None
            if second_page:
                after = recordings.search(s, where, filters, limit=51)[-1].id
            times = []
            for _ in range(runs):
                t = time.perf_counter()
                rows = recordings.search(s, where, filters, after=after, limit=51)
                times.append((time.perf_counter() - t) * 1000)
            out.append((label, statistics.median(times),
                        statistics.quantiles(times, n=20)[-1], len(rows)))
        times = []
        for _ in range(runs):
            t = time.perf_counter()
            batch = recordings.expired(s, now - dt.timedelta(days=180), recordings.PURGE_BATCH)
            times.append((time.perf_counter() - t) * 1000)
        out.append(("retention: one batch of 500 past 180 days", statistics.median(times),
                    statistics.quantiles(times, n=20)[-1], len(batch)))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    targets = []
    work = Path(tempfile.mkdtemp(prefix="khhf-bench-recordings-"))
    targets.append(("SQLite", db.make_engine(f"sqlite:///{work / 'calls.db'}"), None))
    pg_url = os.environ.get("KHHF_TEST_PG_URL")
    if pg_url:
        admin = db.make_engine(pg_url, isolation_level="AUTOCOMMIT")
        name = f"khhf_bench_recordings_{uuid.uuid4().hex[:8]}"
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = admin.url.set(database=name).render_as_string(hide_password=False)
        targets.append(("PostgreSQL", db.make_engine(url), (admin, name)))
    try:
        for label, engine, _ in targets:
            db.create_schema(engine)
            t = time.perf_counter()
            fill(engine, args.calls)
            print(f"\n{label}: {args.calls:,} calls generated in {time.perf_counter() - t:.0f} s")
            print(f"| query ({label}, {args.calls:,} calls) | p50 ms | p95 ms | rows |")
            print("|---|---|---|---|")
            for name, p50, p95, rows in measure(engine, args.runs):
                print(f"| {name} | {p50:.1f} | {p95:.1f} | {rows} |")
            engine.dispose()
    finally:
        for _label, engine, pg in targets:
            engine.dispose()
            if pg:
                admin, name = pg
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
