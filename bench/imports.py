"""Import benchmark: customers from XLSX and CSV, end to end, against a
bare executemany of the same rows in the same run.

    python3 -m bench.imports [--rows 100000,1000000] [--db sqlite,postgresql]
                             [--formats xlsx,csv] [--readers-rows 100000]

1. Readers: seconds to iterate every row of the same XLSX with
   python-calamine and with openpyxl's read-only mode (what chose the reader).
2. Imports: for each rows x format x database, a child process (so its peak
   RSS is its own) creates a fresh database with 50 managers, then runs
   khhf.services.imports.run(commit=True) + COMMIT on the file: parse,
   validate (phone normalising, in-file and database duplicates, managers),
   insert customers, open their manager assignments, audit. Then, in the
   same process and a second fresh database, a bare executemany of the
   same rows (already in memory, already normalised, the same managers)
   into customers (no assignments, no audit).
   Half the rows name a manager; the file has a title row and floats as
   phone numbers, as Excel writes them. On PostgreSQL a third fresh
   database takes the same rows by one bare COPY ("bare COPY s"): the
   server's own floor for writing them. "client CPU s" is the importing
   process's own CPU time (not the database server's): on a shared machine
   it shows how much of the wall time was spent waiting for a core.

Prints one table. PostgreSQL needs --pg-url or KHHF_TEST_PG_URL (a role
that may CREATE DATABASE).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import insert, text

from khhf import db
from khhf.models import Customer, utcnow

MANAGERS = 50
COUNTY = "bench"


def phone(i: int) -> int:
    return 13000000000 + i * 7


def write_files(directory: Path, rows: int, formats) -> dict[str, Path]:
    files = {}
    if "csv" in formats:
        path = directory / f"customers-{rows}.csv"
        if not path.exists():
            with open(path, "w", encoding="gb18030", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["客户名单"])
                writer.writerow(["客户姓名", "手机号码", "客户经理工号", "备注"])
                for i in range(rows):
                    writer.writerow([f"客户{i}", phone(i), f"E{i % MANAGERS:03d}" if i % 2 else "",
                                     "导入测试"])
        files["csv"] = path
    if "xlsx" in formats:
        import openpyxl
        path = directory / f"customers-{rows}.xlsx"
        if not path.exists():
            workbook = openpyxl.Workbook(write_only=True)
            sheet = workbook.create_sheet()
            sheet.append(["客户名单"])
            sheet.append(["客户姓名", "手机号码", "客户经理工号", "备注"])
            for i in range(rows):
                sheet.append([f"客户{i}", float(phone(i)), f"E{i % MANAGERS:03d}" if i % 2 else "",
                              "导入测试"])
            workbook.save(path)
        files["xlsx"] = path
    return files


def fresh_database(kind: str, directory: Path, pg_url: str | None):
    """(engine, drop) for a new empty database with the schema."""
    if kind == "sqlite":
        path = directory / f"bench-{uuid.uuid4().hex[:8]}.db"
        engine = db.make_engine(f"sqlite:///{path}")
        db.create_schema(engine)

        def drop():
            engine.dispose()
            for suffix in ("", "-wal", "-shm"):
                Path(str(path) + suffix).unlink(missing_ok=True)
        return engine, drop
    admin = db.make_engine(pg_url, isolation_level="AUTOCOMMIT")
    name = f"khhf_bench_imp_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    engine = db.make_engine(admin.url.set(database=name).render_as_string(hide_password=False))
    db.create_schema(engine)

    def drop():
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
    return engine, drop


def seed(engine) -> None:
    from simkit import factories
    with db.session_factory(engine)() as s:
        county = factories.county(s, COUNTY)
        for i in range(MANAGERS):
            factories.manager(s, county, f"bm{i:03d}", employee_no=f"E{i:03d}")
        s.commit()


def one(args) -> dict:
    """In the child: the import, then the bare executemany; as JSON."""
    from khhf.services import imports
    directory = Path(args.dir)
    engine, drop = fresh_database(args.one_db, directory, args.pg_url)
    try:
        seed(engine)
        started, cpu = time.perf_counter(), time.process_time()
        with db.session_factory(engine)() as session:
            db.begin_write(session)
            report = imports.run(session, "customers", args.one_file,
                                 imports.Options(county_code=COUNTY), commit=True)
            session.commit()
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        assert report.accepted == args.one_rows and not report.rejects, report.rejected
    finally:
        drop()
    # the baseline: the same rows, ready in memory, one executemany
    engine, drop = fresh_database(args.one_db, directory, args.pg_url)
    try:
        seed(engine)
        with engine.connect() as conn:
            county_id = conn.execute(text("SELECT id FROM counties")).scalar()
            managers = dict(conn.execute(text("SELECT employee_no, id FROM managers")).all())
        now = utcnow()
        # half the rows with the manager the file names, as the import writes them
        rows = [{"phone": str(phone(i)), "name": f"客户{i}", "county_id": county_id,
                 "manager_id": managers[f"E{i % MANAGERS:03d}"] if i % 2 else None,
                 "note": "导入测试", "created_at": now, "updated_at": now}
                for i in range(args.one_rows)]
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(insert(Customer.__table__), rows)
        bare = time.perf_counter() - started
    finally:
        drop()
    copy = None
    if args.one_db == "postgresql":
        # the floor on PostgreSQL: the same rows by one COPY, the fastest way
        # it takes rows (what the import itself uses, chunk by chunk)
        engine, drop = fresh_database(args.one_db, directory, args.pg_url)
        try:
            seed(engine)
            columns = list(rows[0])
            started = time.perf_counter()
            with engine.begin() as conn:
                driver = conn.connection.driver_connection
                with driver.cursor() as cursor, cursor.copy(
                        f"COPY customers ({', '.join(columns)}) FROM STDIN") as out:
                    for row in rows:
                        out.write_row([row[c] for c in columns])
            copy = time.perf_counter() - started
        finally:
            drop()
    return {"seconds": seconds, "cpu": cpu, "bare": bare, "copy": copy, "rss_mb": rss_mb}


def readers(path: Path) -> dict[str, float]:
    from khhf.services import imports
    out = {}
    for reader in ("calamine", "openpyxl"):
        started = time.perf_counter()
        rows, _ = imports.open_table(path, reader)
        n = sum(1 for _ in rows)
        out[reader] = time.perf_counter() - started
        out["rows"] = n
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="100000,1000000")
    parser.add_argument("--db", default="sqlite,postgresql")
    parser.add_argument("--formats", default="xlsx,csv")
    parser.add_argument("--readers-rows", type=int, default=100_000)
    parser.add_argument("--pg-url", default=os.environ.get("KHHF_TEST_PG_URL"))
    parser.add_argument("--dir", help="where the generated files are kept (default: a temp dir)")
    parser.add_argument("--one-db"), parser.add_argument("--one-file")
    parser.add_argument("--one-rows", type=int)
    args = parser.parse_args(argv)
    if args.one_db:
        print(json.dumps(one(args)))
        return 0
    directory = Path(args.dir or tempfile.mkdtemp(prefix="khhf-bench-imports-"))
    directory.mkdir(parents=True, exist_ok=True)
    formats = args.formats.split(",")
    databases = args.db.split(",")
    if "postgresql" in databases and not args.pg_url:
        print("bench.imports: PostgreSQL needs --pg-url or KHHF_TEST_PG_URL", file=sys.stderr)
        return 2

    if args.readers_rows:
        path = write_files(directory, args.readers_rows, ["xlsx"])["xlsx"]
        r = readers(path)
        print(f"XLSX readers, {r['rows']:,} rows: calamine {r['calamine']:.2f} s, "
              f"openpyxl read-only {r['openpyxl']:.2f} s "
              f"({r['openpyxl'] / r['calamine']:.1f}x slower)", flush=True)

    results = []
    header = (f"{'rows':>9} {'format':>6} {'database':>10} {'import s':>9} {'rows/s':>9} "
              f"{'bare s':>7} {'bare rows/s':>11} {'ratio':>6} {'peak RSS MB':>11} {'client CPU s':>12} "
              f"{'bare COPY s':>11}")
    print(header, flush=True)
    for rows in [int(r) for r in args.rows.split(",")]:
        files = write_files(directory, rows, formats)
        for fmt in formats:
            for database in databases:
                command = [sys.executable, "-m", "bench.imports", "--one-db", database,
                           "--one-file", str(files[fmt]), "--one-rows", str(rows),
                           "--dir", str(directory)]
                if args.pg_url:
                    command += ["--pg-url", args.pg_url]
                out = subprocess.run(command, capture_output=True, text=True)
                if out.returncode != 0:
                    print(f"{rows:>9} {fmt:>6} {database:>10} FAILED: {out.stderr[-500:]}")
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results.append((rows, fmt, database, r))
                print(f"{rows:>9,} {fmt:>6} {database:>10} {r['seconds']:>9.1f} "
                      f"{rows / r['seconds']:>9,.0f} {r['bare']:>7.1f} "
                      f"{rows / r['bare']:>11,.0f} {r['seconds'] / r['bare']:>5.1f}x "
                      f"{r['rss_mb']:>11,.0f} {r['cpu']:>12.1f} "
                      f"{'—' if r.get('copy') is None else format(r['copy'], '.1f'):>11}",
                      flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
