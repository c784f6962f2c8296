"""Fault drills (issue 19): run them against the real parts and print one
table, as the reliability chapter (docs/reliability.md) carries it.

    python3 -m bench.drills [--short] [--only NAME[,NAME]] [--engine sqlite|postgresql]
                            [--seed N]
    python3 -m bench.drills --soak MINUTES [--calls N] [--engine ...]

Without --soak: drills 1-7, their long forms (--short: the short forms the
tests run). Each drill starts the whole stack itself, injects its fault,
recovers and counts (simkit.drills). A drill whose module is not there
(yet) is reported "not built"; one that raises is reported with its error,
and the others still run. --engine picks the database of the drills that
run on either (the PostgreSQL outage always runs on PostgreSQL, the held
SQLite on SQLite); PostgreSQL comes from KHHF_TEST_PG_URL (bench/run sets
it). --soak runs drill 8 alone: N concurrent recorded calls for MINUTES.
Exit status 1 if any drill broke a promise (or did not run).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import inspect
import os
import platform
import subprocess
import sys
import time
import traceback

from khhf import config
from simkit.drills import DrillRow, table

# name, module, function, the engines it runs on (None: either, --engine picks)
DRILLS = (
    ("postgres_outage", "simkit.drills.database", "postgres_outage", "postgresql"),
    ("sqlite_held", "simkit.drills.database", "sqlite_held", "sqlite"),
    ("recordings_disk_full", "simkit.drills.media", "recordings_disk_full", None),
    ("carrier_failure", "simkit.drills.carrier", "carrier_failure", None),
    ("pbx_graceful_restart", "simkit.drills.media", "pbx_graceful_restart", None),
    ("jobs_killed", "simkit.drills.jobs", "jobs_killed", None),
    ("chaos", "simkit.drills.chaos", "chaos", None),
)
SOAK = ("soak", "simkit.drills.soak", "soak", None)


def host_facts() -> str:
    """Date, host, cores, RAM and the Asterisk version, for under the table."""
    try:
        with open("/proc/meminfo") as fh:
            kib = int(fh.readline().split()[1])
        ram = f"{kib / 1024 / 1024:.1f} GiB RAM"
    except (OSError, ValueError, IndexError):
        ram = "RAM unknown"
    root = os.environ.get("KHHF_ASTERISK_ROOT", str(config.Settings.asterisk_root))
    try:
        version = subprocess.run(
            ["dpkg-query", f"--admindir={root}/var/lib/dpkg", "-W", "-f", "${Version}",
             "asterisk"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        version = ""
    return (f"{dt.datetime.now().astimezone():%Y-%m-%d %H:%M %Z}, host {platform.node()}: "
            f"{os.cpu_count()} cores, {ram}, Asterisk {version or 'version unknown'}, "
            f"Python {platform.python_version()}, load average "
            f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} at the end")


def run_one(name: str, module: str, function: str, fixed: str | None, engine: str,
            **options) -> DrillRow:
    """Import the drill by name (lazily: a missing one is 'not built') and run it."""
    engine = fixed or engine
    try:
        drill = getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError):
        return DrillRow(name, engine, operator_saw=f"not built ({module}.{function} is missing)",
                        notes=["not built"])
    accepted = inspect.signature(drill).parameters
    kwargs = {k: v for k, v in dict(options, engine=engine).items()
              if k in accepted and v is not None}
    started = time.monotonic()
    print(f"drill {name} ({engine}) ...", file=sys.stderr, flush=True)
    try:
        row = drill(**kwargs)
    except Exception as exc:  # noqa: BLE001 - a drill that raises is a row, the others still run
        traceback.print_exc()
        return DrillRow(name, engine, operator_saw=f"the drill raised {exc.__class__.__name__}",
                        seconds=time.monotonic() - started,
                        notes=[f"raised: {str(exc).splitlines()[0] if str(exc) else exc!r}"])
    print(f"drill {name}: {'held' if not row.violations() else row.violations()} "
          f"({time.monotonic() - started:.0f} s)", file=sys.stderr, flush=True)
    return row


def print_table(rows: list[DrillRow], short: bool) -> None:
    print(f"fault drills ({'short' if short else 'long'} forms): "
          "placed = calls the callers placed, rows = call rows found for them, "
          "lost = placed calls with no final row, doubled = rows beyond one per call; "
          "recordings ok = length is talk time ±1 s")
    print()
    print(table(rows))
    print()
    print(host_facts())
    for row in rows:
        for problem in row.violations():
            print(f"{row.drill} ({row.engine}): {problem}")


def soak(minutes: float, calls: int, engine: str) -> int:
    """Drill 8 alone: its row, then its figures and the daemons' RSS/fds table."""
    from simkit.drills.soak import run_soak
    result = run_soak(minutes, calls, engine)
    print_table([result.row], short=False)
    print()
    print("\n".join(result.lines))
    return 1 if result.row.violations() else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python3 -m bench.drills", description=__doc__.split("\n")[0])
    p.add_argument("--short", action="store_true", help="the short forms (as the tests run them)")
    p.add_argument("--only", default="", help="comma-separated drill names: "
                   + ", ".join(d[0] for d in DRILLS + (SOAK,)))
    p.add_argument("--engine", default="sqlite", choices=("sqlite", "postgresql"))
    p.add_argument("--seed", type=int, default=None, help="the chaos drill's seed (default 7)")
    p.add_argument("--soak", type=float, metavar="MINUTES",
                   help="run the soak (drill 8) alone for MINUTES")
    p.add_argument("--calls", type=int, default=None,
                   help="the soak's concurrent calls (default 100; 10 with --short)")
    args = p.parse_args(argv)
    if args.soak is not None:
        return soak(args.soak, args.calls or 100, args.engine)
    names = {n.strip() for n in args.only.split(",") if n.strip()}
    known = {d[0] for d in DRILLS + (SOAK,)}
    if names - known:
        p.error(f"no drill named {', '.join(sorted(names - known))}; "
                f"choose from {', '.join(sorted(known))}")
    chosen = [d for d in DRILLS + (SOAK,) if d[0] in names] if names else list(DRILLS)
    rows = [run_one(*drill, engine=args.engine, short=args.short, seed=args.seed,
                    **({"calls": args.calls} if drill is SOAK else {}))
            for drill in chosen]
    print_table(rows, args.short)
    return 1 if any(r.violations() for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
