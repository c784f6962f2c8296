"""`khhf recordings purge`: the retention rule, by hand.

    khhf recordings purge            list what the retention rule would delete (nothing changes)
    khhf recordings purge --commit   delete those recordings and mark their calls

A dry run is the default, as for every khhf command that deletes or moves
data: typing the command bare never loses a file. The rule is the timed-jobs
daemon's (khhf.services.recordings.purge): recordings of calls that ended
more than `recording_retention_days` days ago (0 keeps them forever).
Exit status 0; 1 with one line when the settings are wrong; 3 when some
recordings were left alone because their path leads outside the recordings
directory (look at them).
"""

from __future__ import annotations

import sys


def register(subparsers) -> None:
    """Add the `recordings` command to khhf's argument parser."""
    p = subparsers.add_parser("recordings", help="call recordings: retention")
    sub = p.add_subparsers(dest="recordings_command", required=True)
    d = sub.add_parser("purge", help="list (default) or delete the recordings older than "
                                     "recording_retention_days")
    mode = d.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="only list what would be deleted (the default)")
    mode.add_argument("--commit", action="store_true", help="delete them")
    d.set_defaults(func=cmd_purge)


def cmd_purge(args) -> int:
    from khhf import config, db
    from khhf.models import utcnow
    from khhf.services import recordings
    settings = config.load(args.config)
    days = recordings.retention_days(settings)
    if not days:
        print("recording_retention_days is 0: recordings are kept forever, nothing to delete. "
              "Set it (e.g. KHHF_RECORDING_RETENTION_DAYS=180) to keep them that many days.")
        return 0
    engine = db.open_database(settings)
    now = utcnow()
    try:
        items = recordings.purge(db.session_factory(engine), settings,
                                 dry_run=not args.commit, now=now)
    finally:
        engine.dispose()
    for item in items:
        ended = settings.local(item.ended_at)
        size = f"{item.size / 1e6:.1f} MB" if item.size else "size unknown"
        outcome = f"\t{item.outcome}" if item.outcome else ""
        print(f"call {item.call_id}\tended {ended:%Y-%m-%d %H:%M}\t{size}\t"
              f"{settings.recordings_dir / item.path}{outcome}")
    total = sum(item.size or 0 for item in items) / 1e6
    since = settings.local(recordings.cutoff(settings, now))
    if not args.commit:
        print(f"{len(items)} recordings ({total:.1f} MB) of calls that ended before "
              f"{since:%Y-%m-%d %H:%M} ({days} days) would be deleted; nothing was changed. "
              "Run `khhf recordings purge --commit` to delete them.")
        return 0
    refused = [item for item in items if item.outcome == "refused"]
    print(f"{len(items) - len(refused)} recordings ({days} days) deleted and marked "
          f"({sum(item.outcome == 'missing' for item in items)} files were already gone).")
    if refused:
        print(f"{len(refused)} left alone: their path leads outside "
              f"{settings.recordings_dir}; look at them.", file=sys.stderr)
        return 3
    return 0
