"""`khhf backup ...`: one archive with the database, recordings and
configuration, and its restore (khhf.backup).

    khhf backup create PATH [--recordings all|since-last|none] [--with-secrets]
    khhf backup verify PATH              check every file against the manifest
    khhf backup restore PATH [--home DIR] [--database-url URL] [--force]
    khhf backup list DIR                 the archives in DIR, by name

PATH ending in .tar.gz or .tgz is gzip-compressed, .tar is not. `create`
runs while the daemons work. `restore` writes into the home and database
of the configuration named by --config (created if missing; --home and
--database-url as for `khhf init`); stop the daemons of that home first.

Exit status 0; 1 with one line when refused (a damaged archive, a target
that is not empty without --force, no pg_dump, wrong settings).
"""

from __future__ import annotations

import datetime as dt
import sys

from khhf.audit import CLI_ADDRESS


def register(subparsers) -> None:
    """Add the `backup` command to khhf's argument parser."""
    from khhf.backup import RECORDINGS_MODES
    p = subparsers.add_parser("backup", help="back up and restore the database, recordings "
                                             "and configuration")
    sub = p.add_subparsers(dest="backup_command", required=True)
    c = sub.add_parser("create", help="write one archive of this system")
    c.add_argument("path", help="the archive to write: NAME.tar or NAME.tar.gz")
    c.add_argument("--recordings", choices=RECORDINGS_MODES, default="all",
                   help="all recordings (default), those since the last backup began, or none")
    c.add_argument("--with-secrets", action="store_true",
                   help="keep the secrets in the archived configuration (keep the archive "
                        "as safe as /etc/khhf/khhf.conf)")
    c.set_defaults(func=cmd_create)
    v = sub.add_parser("verify", help="check an archive's files against its manifest")
    v.add_argument("path")
    v.set_defaults(func=cmd_verify)
    r = sub.add_parser("restore", help="restore an archive into an empty home and database")
    r.add_argument("path")
    r.add_argument("--home", help="the target's state directory (default: its configuration's)")
    r.add_argument("--database-url", help="the target's database (default: its configuration's)")
    r.add_argument("--force", action="store_true",
                   help="replace a database that has tables, add to recordings already there")
    r.set_defaults(func=cmd_restore)
    ls = sub.add_parser("list", help="the archives in a directory")
    ls.add_argument("directory")
    ls.set_defaults(func=cmd_list)


def _run(what, *args, **kwargs):
    from khhf.backup import BackupError
    try:
        return what(*args, **kwargs)
    except BackupError as exc:
        print(f"khhf backup: {exc}", file=sys.stderr)
        return None


def _describe(manifest: dict) -> str:
    started = dt.datetime.fromisoformat(manifest["started_at"])
    rows = sum(manifest["database"]["tables"].values())
    rec = manifest["recordings"]
    return (f"taken {started:%Y-%m-%d %H:%M:%S %Z} by KHHF {manifest['khhf_version']}: "
            f"{manifest['database']['kind']} database with {rows} rows in "
            f"{len(manifest['database']['tables'])} tables, {rec['files']} recordings "
            f"({rec['bytes'] / 1e6:.1f} MB, {rec['mode']}), configuration "
            f"{'with' if manifest['config']['secrets'] else 'without'} secrets")


def cmd_create(args) -> int:
    from khhf import backup, config
    settings = config.load(args.config)
    manifest = _run(backup.create, settings, args.path, recordings=args.recordings,
                    with_secrets=args.with_secrets, ip=CLI_ADDRESS)
    if manifest is None:
        return 1
    print(f"{args.path}: {_describe(manifest)}.")
    return 0


def cmd_verify(args) -> int:
    from khhf import backup
    manifest = _run(backup.verify, args.path)
    if manifest is None:
        return 1
    print(f"{args.path}: every file matches its checksum; {_describe(manifest)}.")
    return 0


def cmd_restore(args) -> int:
    from khhf import backup, config
    overrides = {k: v for k, v in (("home", args.home), ("database_url", args.database_url))
                 if v}
    settings = config.load(args.config, **overrides)
    manifest = _run(backup.restore, settings, args.path, force=args.force, ip=CLI_ADDRESS)
    if manifest is None:
        return 1
    print(f"restored {args.path} ({_describe(manifest)}) into {settings.home}; "
          f"configuration in {settings.config_path}.")
    if "smsc_password" in manifest["config"]["removed"] \
            and not config.load(settings.config_path).smsc_password:
        print(f"the archive holds no smsc_password: set it in {settings.config_path} for the "
              "SMS gateway.")
    return 0


def cmd_list(args) -> int:
    from pathlib import Path

    from khhf import backup
    if not Path(args.directory).is_dir():
        print(f"khhf backup: {args.directory} is not a directory.", file=sys.stderr)
        return 1
    paths = sorted(p for p in Path(args.directory).iterdir()
                   if p.name.endswith((".tar", ".tar.gz", ".tgz")))
    for p in paths:
        manifest = _run(backup.read_manifest, p)
        if manifest is not None:
            print(f"{p.name}\t{p.stat().st_size / 1e6:.1f} MB\t{_describe(manifest)}")
    if not paths:
        print(f"no backup archives in {args.directory}.")
    return 0
