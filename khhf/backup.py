"""Backup and restore: one archive holds a whole KHHF system.

An archive is a tar file (gzip-compressed when its name ends in .gz or
.tgz) with

    database/khhf.sqlite    SQLite: a copy made by SQLite's online backup API
    database/khhf.pgdump    PostgreSQL: pg_dump --format=custom
    recordings/...          the call recordings, as under the recordings directory
    config/khhf.conf        the configuration file, without secrets unless asked
    manifest.json           last: what the archive holds, its row counts and
                            the sha256 of every other file in it

It is written under a temporary name beside its final one and renamed when
complete, so a half-written archive never carries the final name.

While the daemons write. SQLite: the copy runs inside one read
transaction on the source, in steps of a few pages; in WAL mode (khhf.db
opens every connection in it) a reader never blocks a writer, so dials,
the bridge's call events and the web UI go on, and the copy is the
database as it was when the transaction began (no restart, whatever is
written meanwhile). The row counts are taken from the copy. PostgreSQL: a
REPEATABLE READ transaction exports its snapshot, the counts are taken in
it and pg_dump dumps that same snapshot; pg_dump's ACCESS SHARE locks
block only schema changes, never an INSERT or UPDATE.

The recordings are read after the database: every recording a call row of
the copy names as finished (its checksum stored) is in the archive. A
recording still being written is stored as far as it was written; the
next backup with recordings "since-last" takes it whole.

Restore goes into an empty home and database (the target configuration's
home and database URL): the checksums are verified before anything is
written, the row counts after.
"""

from __future__ import annotations

import configparser
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import re
import sqlite3
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import IO, Any

from sqlalchemy import inspect, text
from sqlalchemy.engine import URL, Engine, make_url

import khhf
from khhf import audit, config, db
from khhf.config import ConfigError, Settings

FORMAT = 1
MANIFEST = "manifest.json"
SQLITE_FILE = "database/khhf.sqlite"
PG_FILE = "database/khhf.pgdump"
CONFIG_FILE = "config/khhf.conf"
RECORDINGS = "recordings"
RECORDINGS_MODES = ("all", "since-last", "none")
# the record of the last backup, under the home: "since-last" starts there
LAST_BACKUP = "last-backup.json"
# the timed job's archives: khhf-backup-YYYYMMDD-HHMMSS.tar
ARCHIVE_NAME = re.compile(r"^khhf-backup-\d{8}-\d{6}\.tar(\.gz)?$")
# SQLite pages copied per step (4 KiB each)
PAGES_PER_STEP = 1024
CHUNK = 1 << 20


class BackupError(Exception):
    """A backup or restore refused or failed; the message (one sentence) says
    what is wrong and what to do."""


# -- create ---------------------------------------------------------------------------------
def create(settings: Settings, path: str | os.PathLike, *, recordings: str = "all",
           with_secrets: bool = False, ip: str = "", pages_per_step: int = PAGES_PER_STEP,
           on_step: Callable[[], None] | None = None) -> dict:
    """Write the archive `path` of the system `settings` describe; return its
    manifest. `recordings`: "all", "since-last" (those written since the
    previous backup began) or "none". `on_step` is called between the
    steps of a SQLite copy (while its read transaction is open).
    The backup is recorded in the audit log, from address `ip`."""
    if recordings not in RECORDINGS_MODES:
        raise BackupError(f"--recordings must be one of {', '.join(RECORDINGS_MODES)}, "
                          f"not {recordings!r}.")
    path = Path(path)
    if path.is_dir():
        raise BackupError(f"{path} is a directory: name the archive file to write, "
                          "e.g. khhf-backup.tar.gz.")
    if path.exists():
        raise BackupError(f"{path} exists: name a new archive (an existing one is never "
                          "overwritten).")
    if not path.parent.is_dir():
        raise BackupError(f"the directory {path.parent} does not exist: create it first.")
    started = _now()
    since = _last_started(settings) if recordings == "since-last" else None
    # never creates one (nothing to back up); at any revision: the backup
    # comes before `khhf db upgrade`
    engine = db.open_database(settings, at_head=False)
    try:
        kind = engine.dialect.name
        with tempfile.TemporaryDirectory(prefix=".khhf-backup-", dir=path.parent) as staging:
            dump = Path(staging) / "database"
            if kind == "sqlite":
                tables = _snapshot_sqlite(engine, dump, pages_per_step, on_step)
            else:
                tables = _snapshot_postgresql(engine, settings, dump)
            conf_text, removed = _config_text(settings, with_secrets)
            # "since-last" with no backup before it is "all"
            mode = "all" if recordings == "since-last" and since is None else recordings
            manifest: dict[str, Any] = {
                "format": FORMAT, "khhf_version": khhf.__version__,
                "started_at": started.isoformat(),
                "database": {"kind": kind, "file": SQLITE_FILE if kind == "sqlite" else PG_FILE,
                             "tables": tables},
                "recordings": {"mode": mode, "since": since.isoformat() if since else None},
                "config": {"file": CONFIG_FILE, "secrets": with_secrets, "removed": removed},
            }
            files = _recording_files(settings, mode, since)
            _write_archive(path, manifest, dump, conf_text.encode("utf-8"), settings, files)
        _remember(settings, path, manifest)
        with db.unit_of_work(db.session_factory(engine)) as session:
            audit.record(session, None, "backup", "", "", {
                "archive": path.name, "recordings": manifest["recordings"]["files"],
                "mode": manifest["recordings"]["mode"], "secrets": with_secrets}, ip)
    finally:
        engine.dispose()
    return manifest


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def _snapshot_sqlite(engine: Engine, target: Path, pages_per_step: int,
                     on_step: Callable[[], None] | None) -> dict:
    source = sqlite3.connect(str(engine.url.database), isolation_level=None,
                             timeout=db.SQLITE_BUSY_TIMEOUT_MS / 1000)
    copy = sqlite3.connect(target)
    try:
        # one read transaction for the whole copy: its snapshot is what is
        # copied, and in WAL mode it blocks no writer (see the module doc)
        source.execute("BEGIN")
        source.execute("SELECT count(*) FROM sqlite_master").fetchone()

        source.backup(copy, pages=pages_per_step,
                      progress=(lambda *_: on_step()) if on_step is not None else None)
        source.execute("COMMIT")
        names = [r[0] for r in copy.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {n: copy.execute(f'SELECT count(*) FROM "{n}"').fetchone()[0] for n in names}
    finally:
        copy.close()
        source.close()


def _snapshot_postgresql(engine: Engine, settings: Settings, target: Path) -> dict:
    with engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn, \
            conn.begin():
        snapshot = conn.exec_driver_sql("SELECT pg_export_snapshot()").scalar()
        pg_dump = pg_tool(settings, "pg_dump", _server_major(conn))
        tables = _counts(conn)
        # pg_dump imports the snapshot, which lives as long as this transaction
        _run_pg([pg_dump, "--format=custom", f"--snapshot={snapshot}", f"--file={target}"],
                engine)
    return tables


def _server_major(conn) -> int:
    return int(conn.exec_driver_sql("SHOW server_version_num").scalar()) // 10000


def pg_tool(settings: Settings, name: str, major: int) -> str:
    """The path of `name` (pg_dump, pg_restore) for a PostgreSQL `major`
    server: in pg_bin_dir if set, else Debian's client of that version (or
    a newer one, which reads older servers)."""
    if settings.pg_bin_dir:
        dirs = [Path(settings.pg_bin_dir)]
    else:
        root = Path("/usr/lib/postgresql")
        versions = sorted(int(d.name) for d in root.glob("*") if d.name.isdigit()) \
            if root.is_dir() else []
        dirs = [root / str(v) / "bin" for v in versions if v >= major]
    for d in dirs:
        exe = d / name
        if exe.is_file() and os.access(exe, os.X_OK):
            return str(exe)
    where = f" in pg_bin_dir {settings.pg_bin_dir}" if settings.pg_bin_dir else ""
    raise BackupError(f"{name} for PostgreSQL {major} is not installed{where}: install "
                      f"Debian's postgresql-client-{major} (or set pg_bin_dir to where it is).")


def without_password(url: URL) -> URL:
    """`url` with no password in it (URL.set cannot take one away)."""
    return url._replace(password=None)


def libpq_target(url: URL) -> tuple[str, dict]:
    """(a libpq connection URI without the password, the environment with
    it as PGPASSWORD): the password never goes on a command line, where
    `ps` shows it to every user."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    dsn = without_password(url)._replace(drivername="postgresql")
    return dsn.render_as_string(hide_password=False), env


def _run_pg(argv: list[str], engine: Engine) -> None:
    dsn, env = libpq_target(engine.url)
    proc = subprocess.run([*argv, f"--dbname={dsn}"], env=env, capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        detail = " ".join(proc.stderr.split())[:300]
        raise BackupError(f"{Path(argv[0]).name} failed ({detail}): check the database URL "
                          "and that the PostgreSQL client matches the server.")


def _counts(conn) -> dict:
    names = sorted(inspect(conn).get_table_names())
    return {n: conn.execute(text(f'SELECT count(*) FROM "{n}"')).scalar() for n in names}


def _config_text(settings: Settings, with_secrets: bool) -> tuple[str, list[str]]:
    """The configuration file's [khhf] section as stored in the archive, and
    the secret settings left out of it."""
    values = _read_config(settings.config_path)
    removed = []
    if not with_secrets:
        for key in config.SECRET_SETTINGS:
            if values.pop(key, ""):
                removed.append(key)
        url = values.get("database_url")
        if url and "://" in url and make_url(url).password:
            values["database_url"] = without_password(make_url(url)).render_as_string(
                hide_password=False)
            removed.append("database_url password")
    parser = configparser.ConfigParser(interpolation=None)
    parser["khhf"] = values
    out = io.StringIO()
    out.write("# From a KHHF backup" + ("; holds secrets, keep it mode 0600.\n"
                                        if with_secrets else ", without secrets.\n"))
    parser.write(out)
    return out.getvalue(), removed


def _read_config(path) -> dict:
    parser = configparser.ConfigParser(interpolation=None)
    if path and Path(path).exists():
        parser.read(path, encoding="utf-8")
    return dict(parser.items("khhf")) if parser.has_section("khhf") else {}


def _recording_files(settings: Settings, mode: str, since: dt.datetime | None) -> list[Path]:
    root = settings.recordings_dir
    if mode == "none" or not root.is_dir():
        return []
    cutoff = since.timestamp() if since else None
    return sorted(p for p in root.rglob("*") if p.is_file() and not p.is_symlink()
                  and (cutoff is None or p.stat().st_mtime >= cutoff))


class _Hashing(io.RawIOBase):
    """A file read through sha256: what tarfile copies is what is hashed."""

    def __init__(self, fh):
        self.fh, self.sha = fh, hashlib.sha256()

    def readable(self):
        return True

    def read(self, size=-1):
        data = self.fh.read(size)
        self.sha.update(data)
        return data


def _write_archive(path: Path, manifest: dict, dump: Path, conf: bytes, settings: Settings,
                   recordings: list[Path]) -> None:
    fd, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    files: dict[str, str] = {}
    try:
        with os.fdopen(fd, "wb") as raw:
            compress = path.name.endswith((".gz", ".tgz"))
            with tarfile.open(fileobj=raw, mode="w:gz" if compress else "w",
                              format=tarfile.PAX_FORMAT) as tar:
                with dump.open("rb") as fh:
                    files[manifest["database"]["file"]] = _add(
                        tar, manifest["database"]["file"], fh, dump.stat())
                files[CONFIG_FILE] = _add(tar, CONFIG_FILE, io.BytesIO(conf), None, len(conf))
                count = size = 0
                for rec in recordings:
                    name = f"{RECORDINGS}/{rec.relative_to(settings.recordings_dir).as_posix()}"
                    try:
                        with rec.open("rb") as fh:
                            st = os.fstat(fh.fileno())
                            files[name] = _add(tar, name, fh, st)
                    except FileNotFoundError:
                        continue  # deleted by the retention job meanwhile
                    count, size = count + 1, size + st.st_size
                manifest["recordings"].update(files=count, bytes=size)
                manifest["files"] = files
                body = json.dumps(manifest, ensure_ascii=False, indent=1).encode("utf-8")
                _add(tar, MANIFEST, io.BytesIO(body), None, len(body))
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _add(tar: tarfile.TarFile, name: str, fh, st: os.stat_result | None, size: int = 0) -> str:
    info = tarfile.TarInfo(name)
    info.size = st.st_size if st else size
    info.mtime = st.st_mtime if st else time.time()
    info.mode = 0o600
    hashing = _Hashing(fh)
    # a recording still being written grows: its size at the stat is stored
    tar.addfile(info, hashing)
    return hashing.sha.hexdigest()


def _remember(settings: Settings, path: Path, manifest: dict) -> None:
    record = settings.home / LAST_BACKUP
    record.parent.mkdir(parents=True, exist_ok=True)
    summary = {k: v for k, v in manifest.items() if k != "files"}
    tmp = record.with_suffix(".tmp")
    tmp.write_text(json.dumps({"archive": str(path.resolve()), "manifest": summary},
                              ensure_ascii=False, indent=1), encoding="utf-8")
    os.replace(tmp, record)


def _last_started(settings: Settings) -> dt.datetime | None:
    """When the last backup of this home began (None: no backup yet)."""
    record = settings.home / LAST_BACKUP
    if not record.exists():
        return None
    try:
        return dt.datetime.fromisoformat(
            json.loads(record.read_text(encoding="utf-8"))["manifest"]["started_at"])
    except (ValueError, KeyError, TypeError):
        raise BackupError(f"{record} is damaged: delete it, and the next backup takes "
                          "all recordings.") from None


# -- read and verify ------------------------------------------------------------------------
def _open(path: Path) -> tarfile.TarFile:
    if not path.is_file():
        raise BackupError(f"{path} is not a file: name a backup archive.")
    try:
        return tarfile.open(path, "r:*")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BackupError(f"{path} is not a readable backup archive ({exc}).") from None


def read_manifest(path: str | os.PathLike) -> dict:
    """The manifest of the archive `path` (nothing verified)."""
    path = Path(path)
    with _open(path) as tar:
        try:
            body = _stream(tar, MANIFEST).read()
        except (KeyError, tarfile.TarError, OSError, EOFError):
            body = None
    return _manifest(path, body)


def _manifest(path: Path, body: bytes | None) -> dict:
    try:
        manifest = json.loads(body) if body is not None else None
    except ValueError:
        manifest = None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        raise BackupError(f"{path} is damaged: its {MANIFEST} is missing or unreadable.")
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{path} has archive format {manifest.get('format')!r}, which this "
                          f"KHHF ({khhf.__version__}) does not read: restore it with the "
                          f"version that made it ({manifest.get('khhf_version')}).")
    return manifest


def verify(path: str | os.PathLike) -> dict:
    """Check every file of the archive against its manifest's sha256;
    return the manifest, or raise BackupError naming the first bad file.
    One pass in the archive's order (a gzip stream is read once)."""
    path = Path(path)
    hashes: dict[str, str] = {}
    body = None
    with _open(path) as tar:
        try:
            for member in tar:
                _check_member(path, member)
                if member.name == MANIFEST:
                    body = _stream(tar, member).read()
                else:
                    hashes[member.name] = _sha256(_stream(tar, member))
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BackupError(f"{path} is damaged: it cannot be read to the end ({exc}).") \
                from None
    manifest = _manifest(path, body)
    expected = manifest["files"]
    for name, sha in hashes.items():
        if name not in expected:
            raise BackupError(f"{path} is damaged: {name} is not in its manifest.")
        if sha != expected[name]:
            raise BackupError(f"{path} is damaged: {name} does not match its checksum.")
    missing = sorted(set(expected) - set(hashes))
    if missing:
        raise BackupError(f"{path} is damaged: {missing[0]} is missing from it.")
    return manifest


def _check_member(path: Path, member: tarfile.TarInfo) -> None:
    name = PurePosixPath(member.name)
    if not member.isfile() or name.is_absolute() or ".." in name.parts:
        raise BackupError(f"{path} is damaged: {member.name} is not a plain file inside "
                          "the archive.")


def _stream(tar: tarfile.TarFile, member: str | tarfile.TarInfo) -> IO[bytes]:
    fh = tar.extractfile(member)
    if fh is None:
        name = member if isinstance(member, str) else member.name
        raise BackupError(f"the archive is damaged: {name} is not a plain file.")
    return fh


def _sha256(fh) -> str:
    sha = hashlib.sha256()
    while chunk := fh.read(CHUNK):
        sha.update(chunk)
    return sha.hexdigest()


# -- restore --------------------------------------------------------------------------------
def restore(settings: Settings, path: str | os.PathLike, *, force: bool = False,
            ip: str = "") -> dict:
    """Restore the archive `path` into the home and database of `settings`
    (the target's): verify, then the database, the configuration file
    (settings.config_path) and the recordings; then compare the row counts
    with the manifest. Refuses a database that has tables, or a recordings
    directory that has files, unless `force`. Returns the manifest."""
    path = Path(path)
    manifest = verify(path)
    kind = manifest["database"]["kind"]
    engine = db.make_engine(settings.database_url)
    try:
        if engine.dialect.name != kind:
            raise BackupError(f"the archive holds a {kind} database and the target "
                              f"database_url is {engine.dialect.name}: restore it into a "
                              f"{kind} database.")
        archived = _read_archived_config(path)
        target = dataclasses.replace(settings, pbx_name=archived.get("pbx_name")
                                     or settings.pbx_name)
        if not force:
            _refuse_non_empty(engine, target)
        restore_tool = None
        if kind == "postgresql":
            with engine.connect() as conn:
                restore_tool = pg_tool(settings, "pg_restore", _server_major(conn))
        settings.home.mkdir(parents=True, exist_ok=True)
        # one pass in the archive's order: the database first, as it was written
        with _open(path) as tar, tempfile.TemporaryDirectory(prefix=".khhf-restore-",
                                                            dir=settings.home) as staging:
            for member in tar:
                if member.name == manifest["database"]["file"] and kind == "sqlite":
                    engine.dispose()
                    database = Path(str(engine.url.database))
                    for suffix in ("-wal", "-shm"):  # the replaced database's journal
                        Path(f"{database}{suffix}").unlink(missing_ok=True)
                    _extract(path, tar, manifest, member, database)
                    _restore_config(settings, archived, manifest)
                elif member.name == manifest["database"]["file"]:
                    dump = Path(staging) / "database"
                    _extract(path, tar, manifest, member, dump)
                    _restore_postgresql(engine, dump, str(restore_tool))
                    _restore_config(settings, archived, manifest)
                elif member.name.startswith(f"{RECORDINGS}/"):
                    relative = member.name[len(RECORDINGS) + 1:]
                    _extract(path, tar, manifest, member, target.recordings_dir / relative)
        with engine.connect() as conn:
            counts = _counts(conn)
        for table, count in manifest["database"]["tables"].items():
            if counts.get(table) != count:
                raise BackupError(f"the restored table {table} has {counts.get(table)} rows "
                                  f"and the archive's manifest says {count}: the restore is "
                                  "incomplete, restore again with --force.")
        with db.unit_of_work(db.session_factory(engine)) as session:
            audit.record(session, None, "restore", "", "", {
                "archive": path.name, "started_at": manifest["started_at"],
                "recordings": manifest["recordings"]["files"]}, ip)
    finally:
        engine.dispose()
    return manifest


def _read_archived_config(path: Path) -> dict:
    with _open(path) as tar:
        for member in tar:  # the second file: no need to read further
            if member.name == CONFIG_FILE:
                body = _stream(tar, member).read().decode("utf-8")
                break
        else:
            raise BackupError(f"{path} is damaged: {CONFIG_FILE} is missing from it.")
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(body)
    return dict(parser.items("khhf")) if parser.has_section("khhf") else {}


def _refuse_non_empty(engine: Engine, target: Settings) -> None:
    tables = inspect(engine).get_table_names()
    if tables:
        where = engine.url.render_as_string(hide_password=True)
        raise BackupError(f"the database {where} is not empty ({len(tables)} tables): "
                          "restore into an empty one, or add --force to replace it.")
    recordings = target.recordings_dir
    if recordings.is_dir() and any(p.is_file() for p in recordings.rglob("*")):
        raise BackupError(f"the recordings directory {recordings} has files: restore into "
                          "an empty home, or add --force to add the archive's to them.")


def _extract(path: Path, tar: tarfile.TarFile, manifest: dict, member: tarfile.TarInfo,
             target: Path) -> None:
    """Write `member` to `target` through a temporary file, checking its
    sha256 once more (the archive may have changed since it was verified)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        sha = hashlib.sha256()
        with os.fdopen(fd, "wb") as out:
            source = _stream(tar, member)
            while chunk := source.read(CHUNK):
                sha.update(chunk)
                out.write(chunk)
        if sha.hexdigest() != manifest["files"].get(member.name):
            raise BackupError(f"{path} is damaged: {member.name} does not match its checksum.")
        os.utime(partial, (member.mtime, member.mtime))
        os.replace(partial, target)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _restore_postgresql(engine: Engine, dump: Path, pg_restore: str) -> None:
    with engine.begin() as conn:  # --force: the old tables go (nothing else of ours exists)
        for table in inspect(conn).get_table_names():
            conn.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}" CASCADE')
    _run_pg([pg_restore, "--no-owner", "--no-privileges", "--single-transaction",
             "--exit-on-error", str(dump)], engine)


def _restore_config(settings: Settings, archived: dict, manifest: dict) -> None:
    """The archive's configuration, with the target's home and database URL;
    secrets from the archive if it has them, else the target's own, else
    generated (config.write_new, as `khhf init`)."""
    values = dict(archived)
    if not manifest["config"]["secrets"]:
        for key in config.SECRET_SETTINGS:
            values.pop(key, None)
    values.update(home=str(settings.home), database_url=settings.database_url)
    path = settings.config_path or config.DEFAULT_CONFIG_PATH
    try:
        config.write_new(path, **values)
    except ConfigError as exc:
        raise BackupError(f"the archive's configuration does not suit this KHHF: {exc}") \
            from None


# -- many archives: the timed job -----------------------------------------------------------
def archive_name(now: dt.datetime | None = None) -> str:
    """The timed job's archive name for the moment `now` (UTC)."""
    return f"khhf-backup-{(now or _now()):%Y%m%d-%H%M%S}.tar"


def archives(directory: str | os.PathLike) -> list[Path]:
    """The timed job's archives in `directory`, oldest first."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if ARCHIVE_NAME.match(p.name))


def prune(directory: str | os.PathLike, keep: int) -> list[Path]:
    """Delete all but the `keep` newest of the timed job's archives (0: none
    deleted); other files in the directory are never touched. Returns the
    deleted."""
    if keep <= 0:
        return []
    old = archives(directory)[:-keep]
    for p in old:
        p.unlink(missing_ok=True)
    return old


def daily_time(settings: Settings) -> dt.time:
    """backup_time as a local time of day."""
    try:
        return dt.time.fromisoformat(settings.backup_time)
    except ValueError:
        raise ConfigError(f"backup_time must be a time of day as HH:MM, not "
                          f"{settings.backup_time!r}.") from None


def timed(settings: Settings) -> tuple[Path, list[Path]]:
    """The timed job: a backup with all recordings into backup_dir, then
    the retention; returns (the archive, the archives deleted)."""
    directory = Path(settings.backup_dir)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / archive_name()
    create(settings, path, recordings="all")
    return path, prune(directory, settings.backup_keep)
