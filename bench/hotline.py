"""Hotline benchmarks against a real Asterisk, SIPp and the FastAGI service.

    python3 -m bench.hotline [--db sqlite,postgresql] [--customers 1000000]
                             [--calls 300] [--rate 20] [--seconds 60] [--quick]

--quick (under 5 minutes): 200,000 customers, 60 calls per route, 10 s
sustained; its last line is the figure, e.g.
`hotline added p95 sqlite=+2.1 ms (1.8x static) postgresql=+2.9 ms (2.1x);
floor sqlite=+1.9 ms postgresql=+2.0 ms`.

For each database: seed `--customers` customers over 50 managers, start
`python -m agi` (a subprocess, as in production) and a PBX, and register
the 50 desk phones to one answering SIPp.

1. Routing overhead: customers of manager 1 call, one call at a time (at
   most 10 per second, so the desk is idle again), alternately through
   the hotline (AGI-routed: Ringing, AGI, AstDB check, MixMonitor,
   DEVICE_STATE, Dial), a static route that only Dials the same desk
   phone, a static route with the hotline's Ringing and MixMonitor, and
   two copies of the hotline's dialplan: "floor", routed by a FastAGI
   server that answers the same variables at once (bench/agi_floor.py: no
   database, no directory; what any FastAGI routing adds on this host, so
   KHHF's own share is KHHF - floor), and "shape", the AGI replaced by a
   dialplan MSet of those variables (the steps around the AGI); all
   injected into the running PBX, never shipped; warm-up calls first. The
   latency is the customer's INVITE sent -> the desk phone's INVITE
   received, both from SIPp's message traces (same host clock).
2. Sustained: `--rate` calls per second for `--seconds`, spread over all
   managers; a call whose desk is busy rings the mobile (the trunk SIPp
   answers). Dropped = calls SIPp counts as failed.

Prints tables, one per database as it finishes, then all together.
PostgreSQL needs --pg-url or KHHF_TEST_PG_URL (a role that may CREATE
DATABASE; use a role of its own: scripts/test and bench/run reset the
passwords of theirs).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from sqlalchemy import text

from bench.agi_floor import ANSWER
from khhf import db
from simkit.harness import PbxHarness, free_port
from simkit.sipp import SIPP_DIR

MANAGERS = 50
DESKS = [f"{8001 + i}" for i in range(MANAGERS)]
UNIFIED = "13900000001"
# bench only, injected into the running PBX: static routes to the same desk
# phone, one bare, one with the hotline's ringback and recording (so the
# AGI's own cost can be told from the cost of recording); and two copies of
# the hotline's own dialplan (khhf-hotline as rendered): "floor" routes
# through bench/agi_floor.py, a FastAGI server that answers KHHF's variables
# for desk 8001 at once (no database, no directory): what any FastAGI
# routing adds on this host; "shape" sets the same variables with a dialplan
# MSet instead of the AGI (what the dialplan steps around the AGI cost)
ROUTES = {"agi": UNIFIED, "floor": "19900000003", "shape": "19900000004",
          "static": "19900000001", "static+rec": "19900000002"}
STATIC_ROUTE = """[khhf-from-trunk]
exten => 19900000001,1,Dial(PJSIP/8001,5,I)
 same => n,Hangup()
exten => 19900000002,1,Ringing()
 same => n,MixMonitor(${KHHF_REC_DIR}/bench/static-${UNIQUEID}.wav,b)
 same => n,Dial(PJSIP/8001,5,I)
 same => n,Hangup()
exten => 19900000003,1,Goto(bench-floor,${EXTEN},1)
exten => 19900000004,1,Goto(bench-shape,${EXTEN},1)
"""


def hotline_copies(rendered: str, floor_url: str) -> str:
    """The floor and shape routes: khhf-hotline as rendered, renamed, its
    AGIs sent to the floor server; in "shape" the routing AGI replaced by
    a dialplan MSet of what the floor server answers."""
    start = rendered.index("[khhf-hotline]")
    end = rendered.find("\n[", start + 1)
    context = rendered[start:end if end > 0 else None].replace("${KHHF_AGI}", floor_url)
    floor = context.replace("[khhf-hotline]", "[bench-floor]")
    agi = re.search(r"^ same => n,AGI\(%s/hotline,.*$" % re.escape(floor_url), context, re.M)
    if agi is None:
        raise SystemExit("bench: the hotline's routing AGI() line is not in khhf-hotline")
    answer = ANSWER.format(customer="${FILTER(0-9,${CALLERID(num)})}",
                           rec="${STRFTIME(${EPOCH},,%Y/%m/%d)}/in-${UNIQUEID}.wav")
    shape = context.replace("[khhf-hotline]", "[bench-shape]").replace(
        agi.group(0), f" same => n,MSet({answer})")
    return floor + "\n" + shape


def phone(i: int) -> str:
    """Customer i's number; customer i belongs to manager (i % 50) + 1."""
    return f"138{i:08d}"


def seed(engine, customers: int) -> None:
    db.create_schema(engine)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO counties (code, name) VALUES ('bench', 'Bench')"))
        conn.execute(text("INSERT INTO unified_numbers (county_id, number, is_primary) "
                          "VALUES (1, :n, TRUE)"), {"n": UNIFIED})
        for i, desk in enumerate(DESKS, 1):
            conn.execute(text("INSERT INTO users (username, password_hash, display_name, role, "
                              "county_id) VALUES (:u, 'x', :u, 'manager', 1)"), {"u": f"m{i}"})
            conn.execute(text("INSERT INTO managers (user_id, county_id, employee_no, "
                              "desk_extension, mobile, on_duty) VALUES (:i, 1, :u, :d, :m, :o)"),
                         {"i": i, "u": f"m{i}", "d": desk, "m": f"137{i:08d}", "o": i <= 5})
        if engine.dialect.name == "postgresql":
            conn.execute(text(
                "INSERT INTO customers (phone, county_id, manager_id) SELECT "
                "'138' || lpad(i::text, 8, '0'), 1, (i % 50) + 1 FROM generate_series(0, :n) i"),
                {"n": customers - 1})
            conn.execute(text("ANALYZE"))
        else:
            conn.execute(text(
                "INSERT INTO customers (phone, county_id, manager_id) "
                "WITH RECURSIVE s(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM s WHERE i < :n) "
                "SELECT printf('138%08d', i), 1, (i % 50) + 1 FROM s"), {"n": customers - 1})


def scenario_variant(workdir: Path, name: str, source: str, **replace) -> str:
    body = (SIPP_DIR / source).read_text()
    for old, new in replace.items():
        body = body.replace(old, new)
    path = workdir / name
    path.write_text(body)
    return str(path)


def trace_times(messages_log: Path, direction: str) -> dict[str, float]:
    """caller number -> time of the first INVITE sent/received carrying it in From."""
    out: dict[str, float] = {}
    if not messages_log.exists():
        return out
    text_ = messages_log.read_text(errors="replace")
    for block in re.split(r"^-{20,} ", text_, flags=re.M)[1:]:
        stamp, _, rest = block.partition("\n")
        if not rest.startswith(f"UDP message {direction}"):
            continue
        body = rest.split("\n", 2)[-1].lstrip()
        if not body.startswith("INVITE "):
            continue
        m = re.search(r"^From:[^\n]*<sip:(\d+)@", body, re.M)
        if m and m.group(1) not in out:
            out[m.group(1)] = dt.datetime.strptime(stamp.strip(), "%Y-%m-%d %H:%M:%S.%f").timestamp()
    return out


class Bench:
    def __init__(self, label: str, database_url: str, workdir: Path):
        self.label, self.workdir = label, workdir
        self.h = PbxHarness(workdir, name=f"bench-{label}", desk_extensions=DESKS)
        self.h.settings.agi_port = free_port(kind=socket.SOCK_STREAM)
        self.database_url = database_url

    def __enter__(self):
        s = self.h.settings
        env = dict(os.environ, KHHF_CONFIG=str(self.workdir / "khhf.conf"),
                   KHHF_DATABASE_URL=self.database_url, KHHF_AGI_PORT=str(s.agi_port))
        self.agi_log = open(self.workdir / "agi.log", "wb")
        self.agi = subprocess.Popen([sys.executable, "-m", "agi"], env=env, stdout=self.agi_log,
                                    stderr=subprocess.STDOUT,
                                    cwd=Path(__file__).resolve().parent.parent)
        floor_port = free_port(kind=socket.SOCK_STREAM)
        self.floor = subprocess.Popen([sys.executable, "-m", "bench.agi_floor", str(floor_port)],
                                      cwd=Path(__file__).resolve().parent.parent)
        self.h.__enter__()
        etc = self.h.pbx.run_dir / "etc" / "extensions.d"
        (etc / "99-bench.conf").write_text(STATIC_ROUTE + "\n" + hotline_copies(
            (etc / "10-from-trunk.conf").read_text(), f"agi://127.0.0.1:{floor_port}/bench"))
        self.h.pbx.cli("dialplan reload")
        self.h.pbx.cli("dialplan set global KHHF_DESK_RING 5")
        port = free_port()
        for ext in DESKS:
            self.h.register_desk_phone(ext, port)
        self.desk_scenario = scenario_variant(self.workdir, "bench_desk.xml", "answer_hangup.xml",
                                              **{'<pause milliseconds="300"/>': ""})
        self.desks = self.h.party(self.desk_scenario, local_ip="127.0.0.1", port=port,
                                  calls=1_000_000, duration_ms=100)
        self.mobiles = self.h.party(self.desk_scenario, local_ip=s.trunk_host,
                                    port=s.trunk_port, calls=1_000_000, duration_ms=100)
        for party in (self.desks, self.mobiles):
            party.args += ["-timeout", "1800s"]  # answer for the whole run
            party.start()
        self.caller_scenario = scenario_variant(self.workdir, "bench_call.xml",
                                                "hotline_call.xml", **{"[caller]": "[field0]",
                                                   '<timewait milliseconds="300"/>': '<timewait milliseconds="50"/>'})
        return self

    def __exit__(self, *exc):
        self.h.__exit__(*exc)
        self.floor.terminate()
        self.floor.wait(10)
        self.agi.terminate()
        self.agi.wait(10)
        self.agi_log.close()
        # the service's own profile of its requests (agi.server.Profile), logged at exit
        self.profile = [line.split(": ", 1)[-1] for line in
                        (self.workdir / "agi.log").read_text(errors="replace").splitlines()
                        if "AGI profile" in line]

    def calls(self, number: str, callers: list[str], rate: float, limit: int):
        inf = self.workdir / f"callers-{uuid.uuid4().hex[:6]}.csv"
        inf.write_text("SEQUENTIAL\n" + "".join(f"{c};\n" for c in callers))
        party = self.h.party(self.caller_scenario, local_ip=self.h.settings.trunk_host,
                             port=free_port(self.h.settings.trunk_host), remote=self.h.sip_target,
                             service=number, calls=len(callers), rate=rate, max_concurrent=limit)
        party.args += ["-inf", str(inf), "-timeout", "1800s"]
        return party.start()

    def latency(self, n: int, batches: int = 3) -> dict[str, list[float]]:
        """INVITE-in -> INVITE-out at desk 8001 (ms) per route, interleaved in batches."""
        # manager 1's customers, disjoint per route; a few first calls warm up
        own = iter(phone(i) for i in range(0, MANAGERS * 10 * (n + 10), MANAGERS))
        for number in ROUTES.values():
            warm = self.calls(number, [next(own) for _ in range(10 if number == UNIFIED else 3)],
                              rate=10, limit=1)
            warm.wait(60)
        callers = {route: [next(own) for _ in range(n)] for route in ROUTES}
        runs = []
        per = -(-n // batches)
        for b in range(batches):
            for route, number in ROUTES.items():
                chunk = callers[route][b * per:(b + 1) * per]
                party = self.calls(number, chunk, rate=10, limit=1)
                try:
                    party.wait(20 + len(chunk))
                except AssertionError:
                    # a call stuck (on a loaded host, a BYE SIPp never saw):
                    # its batch keeps the calls that completed
                    print(f"[{self.label}] a {route} call did not end; going on",
                          file=sys.stderr)
                runs.append((route, party))
        time.sleep(1)
        received = trace_times(self.desks.message_file, "received")
        out: dict[str, list[float]] = {route: [] for route in ROUTES}
        for route, party in runs:
            sent = trace_times(party.message_file, "sent")
            out[route] += [(received[c] - t) * 1000 for c, t in sent.items() if c in received]
        return out

    def sustained(self, rate: float, seconds: int) -> tuple[int, int, int]:
        """(offered, successful, failed) calls at `rate` per second for `seconds`."""
        n = int(rate * seconds)
        callers = [phone(1_000 + i) for i in range(n)]  # every manager in turn
        party = self.calls(UNIFIED, callers, rate=rate, limit=int(rate * 10))
        try:
            party.wait(seconds + 30)
        except AssertionError:  # as in latency(): a call SIPp never saw end
            print(f"[{self.label}] a sustained call did not end; counted as dropped",
                  file=sys.stderr)
        stats = (party.workdir / "stdout.log").read_text(errors="replace")
        ok = re.findall(r"Successful call\s*\|\s*\d+\s*\|\s*(\d+)", stats)
        failed = re.findall(r"Failed call\s*\|\s*\d+\s*\|\s*(\d+)", stats)
        return n, int(ok[-1]) if ok else 0, int(failed[-1]) if failed else n


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 \
        else values[0]


def print_tables(rows, args) -> None:
    print(f"customers: {args.customers:,}; routing latency = customer INVITE sent -> desk "
          f"INVITE received (ms), {args.calls} calls per route, one at a time")
    print("db | route | n | p50 | p95 | p95 / static | p95 added vs static")
    print("--- | --- | --- | --- | --- | --- | ---")
    for label, lat, _, _ in rows:
        base = pct(lat["static"], 95)
        for route, values in lat.items():
            p95 = pct(values, 95)
            print(f"{label} | {route} | {len(values)} | {pct(values, 50):.2f} | {p95:.2f} | "
                  f"{p95 / base:.2f}x | {p95 - base:+.2f}")
    print()
    print("added over the static Dial, ms, p50 / p95: KHHF's route; the floor (the same "
          "dialplan, a FastAGI server that only answers); KHHF's own share (KHHF - floor); "
          "the dialplan without any AGI (shape); load average (1 min) at start -> end")
    print("db | KHHF | floor | KHHF - floor | shape | load")
    print("--- | --- | --- | --- | --- | ---")
    for label, lat, _, load in rows:
        added = {q: {r: pct(lat[r], q) - pct(lat["static"], q) for r in lat} for q in (50, 95)}
        cells = [f"{added[50][r]:+.2f} / {added[95][r]:+.2f}" for r in ("agi", "floor")]
        cells.append(f"{added[50]['agi'] - added[50]['floor']:+.2f} / "
                     f"{added[95]['agi'] - added[95]['floor']:+.2f}")
        cells.append(f"{added[50]['shape']:+.2f} / {added[95]['shape']:+.2f}")
        print(f"{label} | {' | '.join(cells)} | {load[0]:.2f} -> {load[1]:.2f}")
    print()
    print(f"sustained: {args.rate:g} calls/s offered for {args.seconds} s")
    print("db | offered | answered | dropped")
    print("--- | --- | --- | ---")
    for label, _, (offered, ok, failed), _ in rows:
        print(f"{label} | {offered} | {ok} | {failed}")
    print(flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.hotline", description=__doc__.split("\n")[0])
    p.add_argument("--db", default="sqlite,postgresql")
    p.add_argument("--customers", type=int, default=1_000_000)
    p.add_argument("--calls", type=int, default=300, help="latency samples per route")
    p.add_argument("--rate", type=float, default=20)
    p.add_argument("--seconds", type=int, default=60)
    p.add_argument("--pg-url", default=os.environ.get("KHHF_TEST_PG_URL"))
    p.add_argument("--quick", action="store_true",
                   help="200,000 customers, 60 calls per route, 10 s sustained (< 5 min)")
    args = p.parse_args(argv)
    if args.quick:
        args.customers, args.calls, args.seconds = 200_000, 60, 10
    rows = []
    for label in args.db.split(","):
        workdir = Path(tempfile.mkdtemp(prefix=f"khhf-bench-{label}-"))
        admin = None
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
        started = time.monotonic()
        engine = db.make_engine(url)
        seed(engine, args.customers)
        engine.dispose()
        print(f"[{label}] seeded {args.customers:,} customers in "
              f"{time.monotonic() - started:.0f} s; running calls ...", file=sys.stderr)
        load = os.getloadavg()[0]
        try:
            with Bench(label, url, workdir) as bench:
                lat = bench.latency(args.calls)
                offered, ok, failed = bench.sustained(args.rate, args.seconds)
        finally:
            if admin is not None:
                with admin.connect() as conn:
                    conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
        rows.append((label, lat, (offered, ok, failed), (load, os.getloadavg()[0])))
        for line in bench.profile:
            print(f"[{label}] {line}")
        print_tables(rows[-1:], args)  # as each database finishes: a later failure loses nothing
    if len(rows) > 1:
        print_tables(rows, args)
    print(summary(rows))
    return 0


def summary(rows) -> str:
    """The last line: what the hotline adds at p95 over the static Dial, per
    database, then what the floor route (any FastAGI at all) adds."""
    parts, floor = [], []
    for i, (label, lat, _, _) in enumerate(rows):
        base, agi = pct(lat["static"], 95), pct(lat["agi"], 95)
        ratio = f"{agi / base:.1f}x static" if i == 0 else f"{agi / base:.1f}x"
        parts.append(f"{label}={agi - base:+.1f} ms ({ratio})")
        floor.append(f"{label}={pct(lat['floor'], 95) - base:+.1f} ms")
    return "hotline added p95 " + " ".join(parts) + "; floor " + " ".join(floor)


if __name__ == "__main__":
    sys.exit(main())
