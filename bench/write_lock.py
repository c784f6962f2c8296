"""SQLite's write lock shared by KHHF's processes: how long the AMI bridge's
batches wait for it with the urgent writers' priority (khhf.db.UrgentWriters)
and without it (each process's WriterGate only, as before), in one run.

The writers are shaped after the soak's lock log (docs/reliability.md, "The
bridge's lag under load"), each its own process on one fresh SQLite file:

- web: 8 threads, each a unit of work that holds the lock for --web-ms of
  Python work with a few reads (a dial's checks), then a short pause;
- agi and smsgw: one thread each, short units of work and pauses;
- bridge: one thread, a batch due every 0.1 s (five rows in one unit of
  work), measured from when it was due to its commit.

Units of work refused as busy (their wait ran out) are counted, all roles.

The two arms alternate (without, with, without, with), --seconds each, on
a fresh file each; the load average is printed beside each arm.

    python3 -m bench.write_lock [--quick] [--seconds 30] [--web-ms 20]

Last line: `write_lock bridge batch wait p99 without:with = R`.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from khhf import db

ROOT = Path(__file__).resolve().parent.parent
ROLES = {"web": (8, "web"), "agi": (1, "short"), "smsgw": (1, "short"), "bridge": (1, "bridge")}
BATCH_EVERY_S = 0.1


def _busy(seconds: float) -> None:
    """Spend `seconds` of this thread's CPU in Python (the GIL held)."""
    end = time.thread_time() + seconds
    n = 0
    while time.thread_time() < end:
        n += 1


def run_role(role: str, path: Path, urgent: bool, seconds: float, web_ms: float) -> dict:
    engine = db.make_engine(f"sqlite:///{path}")
    gate = db._gate(f"sqlite:///{path}")
    if not urgent and gate is not None:
        gate.urgent = None  # before: the process's gate, then SQLite's busy handler
    sessions = db.session_factory(engine, urgent=urgent and role == "bridge")
    threads, shape = ROLES[role]
    stop = time.monotonic() + seconds
    waits: list[float] = []
    refused = []  # units of work refused as busy (their wait ran out)

    def writer(seed: int) -> None:
        rnd = random.Random(seed)
        while time.monotonic() < stop:
            try:
                with db.unit_of_work(sessions) as s:
                    s.execute(text("SELECT count(*) FROM events WHERE who = :w"), {"w": role})
                    _busy(web_ms / 1000 if shape == "web" else 0.002)
                    s.execute(text("INSERT INTO events (who, payload) VALUES (:w, :p)"),
                              {"w": role, "p": "x" * 200})
            except OperationalError as exc:
                if not db.is_busy(exc):
                    raise
                refused.append(role)
            time.sleep(rnd.uniform(0, 0.05 if shape == "web" else 0.02))

    def bridge() -> None:
        due = time.monotonic()
        while due < stop:
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                with db.unit_of_work(sessions) as s:
                    for _ in range(5):
                        s.execute(text("INSERT INTO events (who, payload) VALUES ('bridge', "
                                       ":p)"), {"p": "y" * 400})
            except OperationalError as exc:
                if not db.is_busy(exc):
                    raise
                refused.append(role)
                continue  # the bridge holds its events and tries again
            waits.append(time.monotonic() - due)
            due = max(due + BATCH_EVERY_S, time.monotonic())  # late: the next is due now

    work = [threading.Thread(target=bridge)] if shape == "bridge" else \
        [threading.Thread(target=writer, args=(i,)) for i in range(threads)]
    for t in work:
        t.start()
    for t in work:
        t.join()
    engine.dispose()
    return {"waits": waits, "refused": len(refused)}


def arm(urgent: bool, seconds: float, web_ms: float) -> dict:
    with tempfile.TemporaryDirectory(prefix="khhf-bench-lock-") as tmp:
        path = Path(tmp) / "lock.db"
        engine = db.make_engine(f"sqlite:///{path}")
        with engine.begin() as conn:
            conn.exec_driver_sql("CREATE TABLE events (id INTEGER PRIMARY KEY, who TEXT, "
                                 "payload TEXT)")
        engine.dispose()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
        procs = {role: subprocess.Popen(
            [sys.executable, "-m", "bench.write_lock", "--role", role, "--db", str(path),
             "--seconds", str(seconds), "--web-ms", str(web_ms)] + (["--urgent"] if urgent else []),
            cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True) for role in ROLES}
        outputs = {role: json.loads(p.communicate()[0]) for role, p in procs.items()}
        load = os.getloadavg()[0]
    waits = sorted(outputs["bridge"]["waits"]) or [float("nan")]
    return {"n": len(outputs["bridge"]["waits"]), "p50": statistics.median(waits),
            "p99": waits[min(len(waits) - 1, int(0.99 * len(waits)))], "max": waits[-1],
            "refused": sum(o["refused"] for o in outputs.values()), "load": load}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.write_lock",
                                description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="15 s per arm (about a minute)")
    p.add_argument("--seconds", type=float, default=30.0, help="each arm's length")
    p.add_argument("--web-ms", type=float, default=20.0,
                   help="CPU ms a web writer spends holding the lock")
    p.add_argument("--role", choices=sorted(ROLES), help=argparse.SUPPRESS)
    p.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--urgent", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.role:
        print(json.dumps(run_role(args.role, args.db, args.urgent, args.seconds, args.web_ms)))
        return 0
    seconds = 15.0 if args.quick else args.seconds
    print(f"write_lock: web 8 threads x {args.web_ms:g} ms CPU under the lock, agi and smsgw "
          f"short writers, the bridge a batch every {BATCH_EVERY_S:g} s; {seconds:g} s per arm")
    print("arm | bridge batches | wait p50 ms | p99 ms | max ms | refused as busy | load average")
    print("--- | --- | --- | --- | --- | --- | ---")
    p99 = {False: [], True: []}
    for urgent in (False, True, False, True):
        r = arm(urgent, seconds, args.web_ms)
        p99[urgent].append(r["p99"])
        print(f"{'with' if urgent else 'without'} priority | {r['n']} | {r['p50'] * 1000:.0f} | "
              f"{r['p99'] * 1000:.0f} | {r['max'] * 1000:.0f} | {r['refused']} | {r['load']:.1f}",
              flush=True)
    ratio = statistics.mean(p99[False]) / statistics.mean(p99[True])
    print(f"write_lock bridge batch wait p99 without:with = {ratio:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
