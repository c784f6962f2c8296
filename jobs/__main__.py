"""`python -m jobs [--config PATH] [--lease-seconds N]`: the timed-jobs daemon
(campaign rounds, SMS result prompts, the recordings' retention, the PBX's
log files). On several nodes, each runs it; the cluster-once jobs run on one
(jobs/scheduler.py). --lease-seconds: how long a job's lease lasts without
renewal (default khhf.leases.LEASE_SECONDS; the tests shorten it).

Started like the other daemons (khhf.daemon): exit 0 when stopped by
SIGTERM/SIGINT, 1 when it failed while running, 2 when it cannot start as
configured (e.g. the database has no schema: run `khhf init`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

from khhf import daemon


def run(settings, lease_seconds: float | None = None) -> None:
    from jobs.scheduler import Jobs
    from khhf import db
    engine = db.open_database(settings)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    # a line per job run (the SMS sweep runs every few seconds) would bury the
    # journal; a job that raises is still logged, as an error
    logging.getLogger("apscheduler.executors.default").setLevel(logging.WARNING)
    from khhf import leases
    jobs = Jobs(engine, settings.timezone, settings=settings,
                lease_seconds=lease_seconds or leases.LEASE_SECONDS)
    jobs.start()
    logging.getLogger("jobs").info("timed jobs running; job store in %s",
                                   engine.url.render_as_string(hide_password=True))
    beat = daemon.Heartbeat(settings, "jobs")
    beat.keep(lambda: {"runs": jobs.last_runs()})
    try:
        stop.wait()
    finally:
        beat.clear()
        jobs.shutdown()
        engine.dispose()


def main(argv=None) -> int:
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--lease-seconds", type=float)
    args, rest = own.parse_known_args(argv)
    return daemon.main("jobs", "KHHF timed jobs: campaign rounds, SMS result prompts, "
                       "recordings' retention", lambda s: run(s, args.lease_seconds), rest)


if __name__ == "__main__":
    sys.exit(main())
