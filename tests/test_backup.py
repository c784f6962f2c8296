"""Backup and restore (khhf.backup, `khhf backup`): a system seeded with
real rows and WAV recordings is backed up and restored on a second home
with a fresh database; every table's rows, every recording's checksum and
the reports' figures are equal. On SQLite and PostgreSQL (pg_dump and
pg_restore of the server's version). The refusals: a target that is not
empty, a damaged archive, no pg_dump. And a backup under live calls
through the real Asterisk (SQLite): a dial placed while the backup copies
completes, and the restore has the calls completed before it."""

from __future__ import annotations

import configparser
import dataclasses
import datetime as dt
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest
from sqlalchemy import inspect, select, text

from khhf import backup, config, db
from khhf.models import AuditLog, Call, County, Manager
from khhf.services import campaigns, reports, sms
from khhfcli.main import main as khhf
from simkit import factories, report_data

ZONE = "Asia/Shanghai"
START = dt.datetime(2026, 10, 31, 16, 0)   # local midnight, 1 November
DAYS = 4
PERIOD = reports.Filter(dt.date(2026, 11, 1), dt.date(2026, 11, 4))
RECORDED = 3


# -- systems: a home, its configuration, database and recordings ------------------------------
def make_home(tmp_path, name, kind, request, **values) -> config.Settings:
    """A home at tmp_path/name with a configuration file and an empty database."""
    home = tmp_path / name
    if kind == "sqlite":
        url = f"sqlite:///{home / 'khhf.db'}"
    else:
        engine = request.getfixturevalue("pg_database")(name)
        url = engine.url.render_as_string(hide_password=False)
    return config.write_new(tmp_path / f"{name}.conf", home=home, database_url=url,
                            timezone=ZONE, **values)


def seed(settings: config.Settings) -> None:
    """Real rows in most tables (generated report history, recorded calls,
    SMS both ways, audit entries, the reports' sums) and WAV recordings."""
    engine = db.make_engine(settings.database_url)
    db.create_schema(engine)
    with db.unit_of_work(db.session_factory(engine)) as s:
        campaigns.ensure_standard_types(s)
        report_data.generate(s, start=START, days=DAYS, tasks_per_manager=6)
        manager = s.scalars(select(Manager)).first()
        for i in range(RECORDED):
            customer = factories.customer(s, manager.county, f"1390000{i:04d}", manager)
            factories.recorded_call(s, settings.recordings_dir, manager, customer,
                                    seconds=1.0 + i, requested_at=START + dt.timedelta(hours=i),
                                    task_=factories.task(s, customer, manager, status="done"))
        sms.receive(s, "13700000001", "1")
        sms.queue(s, manager, "请回复结果", mobile="13700000001", kind="prompt")
        factories.user(s, "auditor", "admin")
        reports.refresh_due(s, ZONE, now=START + dt.timedelta(days=DAYS + 1))
    engine.dispose()


def counts(settings) -> dict:
    engine = db.make_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            return {t: conn.execute(text(f'SELECT count(*) FROM "{t}"')).scalar()
                    for t in inspect(conn).get_table_names()}
    finally:
        engine.dispose()


def checksums(directory: Path) -> dict:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def figures(settings, refresh: bool = False) -> dict:
    engine = db.make_engine(settings.database_url)
    try:
        with db.unit_of_work(db.session_factory(engine)) as s:
            if refresh:  # from the raw rows again, not the restored sums
                reports.refresh(s, ZONE, PERIOD.start, PERIOD.end)
            return {k: reports.summary(s, PERIOD).value(k) for k in reports.FIGURE_KEYS}
    finally:
        engine.dispose()


def audit_actions(settings) -> list[tuple[str, str]]:
    engine = db.make_engine(settings.database_url)
    try:
        with db.session_factory(engine)() as s:
            return [(e.action, e.ip) for e in s.scalars(
                select(AuditLog).where(AuditLog.action.in_(("backup", "restore"))))]
    finally:
        engine.dispose()


def read_conf(path) -> dict:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(path, encoding="utf-8")
    return dict(parser.items("khhf"))


@pytest.fixture(params=["sqlite", "postgresql"])
def kind(request):
    return request.param


@pytest.fixture
def source(tmp_path, kind, request):
    settings = make_home(tmp_path, "source", kind, request, pbx_name="county7",
                         sip_port="5071", smsc_password="from-the-carrier")
    seed(settings)
    return settings


# -- the round trip ---------------------------------------------------------------------------
def test_restore_on_a_second_home_equals_the_original(source, tmp_path, kind, request, capsys):
    archive = tmp_path / ("backup.tar.gz" if kind == "sqlite" else "backup.tar")
    before = counts(source)
    assert before["calls"] > RECORDED and before["sms_messages"] == 2
    assert before["report_county_daily"] > 0 and before["feedback"] > 0
    original_figures = figures(source)
    assert original_figures["calls_out"] > 0
    recordings = checksums(source.recordings_dir)
    assert len(recordings) == RECORDED

    assert khhf(["--config", str(source.config_path), "backup", "create", str(archive)]) == 0
    out = capsys.readouterr().out
    assert f"{kind} database with {sum(before.values())} rows" in out
    assert f"{RECORDED} recordings" in out
    assert [p.name for p in tmp_path.iterdir() if "partial" in p.name] == []
    manifest = backup.read_manifest(archive)
    assert manifest["database"]["tables"] == before
    assert manifest["khhf_version"] and manifest["database"]["kind"] == kind
    assert {k: v for k, v in manifest["files"].items() if k.startswith("recordings/")} == \
        {f"recordings/{k}": v for k, v in recordings.items()}
    # the archived configuration keeps what the site set, not its secrets
    with tarfile.open(archive) as tar:
        archived = tar.extractfile(backup.CONFIG_FILE).read().decode()
    assert "county7" in archived and "5071" in archived
    for key in config.SECRET_SETTINGS:
        assert key not in archived and getattr(source, key) not in archived
    if kind == "postgresql":
        password = db.make_engine(source.database_url).url.password
        assert password and password not in archived
    assert audit_actions(source) == [("backup", "cli")]
    assert khhf(["--config", str(source.config_path), "backup", "create", str(archive)]) == 1
    assert capsys.readouterr().err == \
        f"khhf backup: {archive} exists: name a new archive (an existing one is never " \
        "overwritten).\n"

    target = make_home(tmp_path, "target", kind, request)
    target_secrets = {k: getattr(target, k) for k in config.SECRET_KEYS}
    assert khhf(["--config", str(target.config_path), "backup", "restore", str(archive)]) == 0
    assert "smsc_password" in capsys.readouterr().out  # the one secret init cannot make
    restored = config.load(target.config_path, environ={})
    # the target's home, database and secrets; the source's other settings
    assert (restored.home, restored.database_url) == (target.home, target.database_url)
    assert {k: getattr(restored, k) for k in config.SECRET_KEYS} == target_secrets
    assert (restored.pbx_name, restored.sip_port) == ("county7", 5071)
    # every table's rows; the audit log has one more: the restore itself
    after = counts(restored)
    assert after == {**before, "audit_log": before["audit_log"] + 1}
    assert audit_actions(restored) == [("restore", "cli")]
    # every recording, byte for byte, where the restored call rows say
    assert checksums(restored.recordings_dir) == recordings
    engine = db.make_engine(restored.database_url)
    with db.session_factory(engine)() as s:
        rows = s.scalars(select(Call).where(Call.recording_sha256.is_not(None))).all()
        assert len(rows) == RECORDED
        for call in rows:
            data = (restored.recordings_dir / call.recording_path).read_bytes()
            assert hashlib.sha256(data).hexdigest() == call.recording_sha256
    # a new row after the restore takes a new id (PostgreSQL's sequences came along)
    with db.unit_of_work(db.session_factory(engine)) as s:
        top = max(s.scalars(select(County.id)))
        assert factories.county(s, "new", "新县").id > top
    # the reports: the restored sums, and the sums made again from the restored rows
    assert figures(restored) == original_figures
    assert figures(restored, refresh=True) == original_figures
    # the operation log says it in the UI's words
    from webui import create_app
    from webui.i18n import audit_sentence
    app = create_app(restored)  # its engine has a connection open: disposed below
    try:
        with app.test_request_context(), db.session_factory(engine)() as s:
            entry = s.scalar(select(AuditLog).where(AuditLog.action == "restore"))
            assert audit_sentence(entry).endswith(
                f"从 {archive.name}（备份于 {manifest['started_at']}，{RECORDED} 个录音）恢复了系统。")
    finally:
        app.extensions["khhf_engine"].dispose()
    engine.dispose()


def test_with_secrets_the_archive_carries_them(tmp_path, request):
    source = make_home(tmp_path, "source", "sqlite", request, smsc_password="from-the-carrier")
    seed(source)
    archive = tmp_path / "with.tar"
    backup.create(source, archive, with_secrets=True, recordings="none")
    assert backup.read_manifest(archive)["recordings"]["files"] == 0
    target = make_home(tmp_path, "target", "sqlite", request)
    backup.restore(target, archive)
    restored = config.load(target.config_path, environ={})
    for key in config.SECRET_SETTINGS:
        assert getattr(restored, key) == getattr(source, key), key
    assert restored.home == target.home
    assert oct(target.config_path.stat().st_mode & 0o777) == "0o600"


# -- refusals ---------------------------------------------------------------------------------
@pytest.fixture
def sqlite_archive(tmp_path, request):
    source = make_home(tmp_path, "source", "sqlite", request)
    seed(source)
    archive = tmp_path / "a.tar"
    backup.create(source, archive)
    return source, archive


def test_a_non_empty_target_is_refused_without_force(sqlite_archive, tmp_path, request, capsys):
    source, archive = sqlite_archive
    target = make_home(tmp_path, "target", "sqlite", request)
    assert khhf(["--config", str(target.config_path), "init", "--no-admin"]) == 0
    capsys.readouterr()
    assert khhf(["--config", str(target.config_path), "backup", "restore", str(archive)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("khhf backup: the database ") and "is not empty" in err
    assert "--force" in err and err.count("\n") == 1
    assert counts(target)["calls"] == 0  # untouched
    assert khhf(["--config", str(target.config_path), "backup", "restore", str(archive),
                 "--force"]) == 0
    assert counts(target)["calls"] == counts(source)["calls"]
    # and a home whose recordings directory has files (an empty database)
    other = make_home(tmp_path, "other", "sqlite", request)
    stray = other.recordings_dir / "2026/11/01/9.wav"
    stray.parent.mkdir(parents=True)
    stray.write_bytes(b"RIFF")
    with pytest.raises(backup.BackupError, match="recordings directory .* has files"):
        backup.restore(other, archive)


def damage(archive: Path, name: str, tmp_path: Path) -> Path:
    """A copy of `archive` with one byte of member `name` flipped."""
    data = bytearray(archive.read_bytes())
    with tarfile.open(archive) as tar:
        offset = tar.getmember(name).offset_data
    data[offset + 100] ^= 0xFF
    bad = tmp_path / "bad.tar"
    bad.write_bytes(bytes(data))
    return bad


def test_a_damaged_archive_is_refused_before_anything_is_written(sqlite_archive, tmp_path,
                                                                 request, capsys):
    _source, archive = sqlite_archive
    target = make_home(tmp_path, "target", "sqlite", request)
    [wav] = [n for n in backup.read_manifest(archive)["files"] if n.endswith(".wav")][:1]
    bad = damage(archive, wav, tmp_path)
    assert khhf(["--config", str(target.config_path), "backup", "restore", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err == f"khhf backup: {bad} is damaged: {wav} does not match its checksum.\n"
    assert not Path(target.database_url.split("///")[1]).exists()
    assert not target.recordings_dir.exists()
    assert khhf(["backup", "verify", str(bad)]) == 1
    # the database dump damaged, a file cut off, a file added, the manifest gone
    with pytest.raises(backup.BackupError, match=f"{backup.SQLITE_FILE} does not match"):
        backup.verify(damage(archive, backup.SQLITE_FILE, tmp_path))
    cut = tmp_path / "cut.tar"
    cut.write_bytes(archive.read_bytes()[:archive.stat().st_size // 2])
    with pytest.raises(backup.BackupError, match="is damaged"):
        backup.restore(target, cut)
    extra = tmp_path / "extra.tar"
    extra.write_bytes(archive.read_bytes())
    with tarfile.open(extra, "a") as tar:
        info = tarfile.TarInfo("recordings/added.wav")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"RIFF"))
    with pytest.raises(backup.BackupError, match="recordings/added.wav is not in its manifest"):
        backup.verify(extra)
    bare = tmp_path / "bare.tar"
    with tarfile.open(archive) as src, tarfile.open(bare, "w") as dst:
        for member in src:
            if member.name != backup.MANIFEST:
                dst.addfile(member, src.extractfile(member))
    with pytest.raises(backup.BackupError, match="manifest.json is missing or unreadable"):
        backup.verify(bare)
    assert khhf(["--config", str(target.config_path), "backup", "verify", str(archive)]) == 0


def test_without_pg_dump_the_backup_is_refused(tmp_path, request, capsys):
    empty = tmp_path / "no-client"
    empty.mkdir()
    source = make_home(tmp_path, "source", "postgresql", request, pg_bin_dir=str(empty))
    seed(source)
    archive = tmp_path / "pg.tar"
    assert khhf(["--config", str(source.config_path), "backup", "create", str(archive)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("khhf backup: pg_dump for PostgreSQL ") and str(empty) in err
    assert "install Debian's postgresql-client-" in err and err.count("\n") == 1
    assert list(tmp_path.glob("pg.tar*")) == [] and list(tmp_path.glob(".pg.tar*")) == []
    assert audit_actions(source) == []
    # and a restore into PostgreSQL without pg_restore touches nothing
    good = dataclasses.replace(source, pg_bin_dir="")
    backup.create(good, archive)
    target = make_home(tmp_path, "target", "postgresql", request, pg_bin_dir=str(empty))
    with pytest.raises(backup.BackupError, match="pg_restore for PostgreSQL"):
        backup.restore(target, archive)
    assert counts(target) == {}


def test_the_database_password_stays_off_the_command_line():
    url = db.make_engine("postgresql://khhf:s3cret@127.0.0.1:5433/khhf?sslmode=require").url
    dsn, env = backup.libpq_target(url)
    assert dsn == "postgresql://khhf@127.0.0.1:5433/khhf?sslmode=require"
    assert env["PGPASSWORD"] == "s3cret"


def test_the_archive_kind_must_match_the_target(sqlite_archive, tmp_path, request):
    _source, archive = sqlite_archive
    target = make_home(tmp_path, "target", "postgresql", request)
    with pytest.raises(backup.BackupError, match="holds a sqlite database and the target"):
        backup.restore(target, archive)


# -- recordings since the last backup; the timed job ----------------------------------------
def test_recordings_since_the_last_backup(tmp_path, request):
    source = make_home(tmp_path, "source", "sqlite", request)
    seed(source)
    first = backup.create(source, tmp_path / "1.tar", recordings="since-last")
    assert first["recordings"]["mode"] == "all" and first["recordings"]["files"] == RECORDED
    record = json.loads((source.home / backup.LAST_BACKUP).read_text())
    assert record["manifest"]["started_at"] == first["started_at"]
    new = source.recordings_dir / "2026/11/05/new.wav"
    new.parent.mkdir(parents=True)
    new.write_bytes(b"RIFF" + os.urandom(1000))
    old = dt.datetime.fromisoformat(first["started_at"]).timestamp() - 60
    for p in source.recordings_dir.rglob("*.wav"):
        if p != new:  # written before the first backup began
            os.utime(p, (old, old))
    second = backup.create(source, tmp_path / "2.tar", recordings="since-last")
    assert second["recordings"]["since"] == first["started_at"]
    assert [n for n in second["files"] if n.startswith("recordings/")] == \
        ["recordings/2026/11/05/new.wav"]


def test_the_timed_job_keeps_the_newest_archives(tmp_path, request):
    from jobs.scheduler import BACKUP_JOB, Jobs
    directory = tmp_path / "backups"
    source = make_home(tmp_path, "source", "sqlite", request, backup_dir=str(directory),
                       backup_keep="2", backup_time="02:30")
    seed(source)
    directory.mkdir()
    for day in ("20261101", "20261102", "20261103"):
        backup.create(source, directory / f"khhf-backup-{day}-023000.tar", recordings="none")
    (directory / "notes.txt").write_text("kept")
    engine = db.make_engine(source.database_url)
    jobs = Jobs(engine, ZONE, settings=source)
    jobs.start(paused=True)
    try:
        job = jobs.scheduler.get_job(BACKUP_JOB, jobstore="memory")
        assert (str(job.trigger.fields[5]), str(job.trigger.fields[6])) == ("2", "30")
        made = jobs.backup()
    finally:
        jobs.shutdown()
        engine.dispose()
    assert sorted(p.name for p in directory.iterdir()) == sorted(
        ["khhf-backup-20261103-023000.tar", made.name, "notes.txt"])
    assert backup.verify(made)["recordings"]["files"] == RECORDED
    wrong = dataclasses.replace(source, backup_time="half past two")
    with pytest.raises(config.ConfigError, match="backup_time must be a time of day"):
        Jobs(db.make_engine(source.database_url), ZONE, settings=wrong).start(paused=True)


def test_backup_list(sqlite_archive, tmp_path, capsys):
    assert khhf(["backup", "list", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("a.tar\t") and f"{RECORDED} recordings" in out


# -- under live calls (SQLite; the real Asterisk) --------------------------------------------
@pytest.mark.pbx
def test_a_backup_under_live_calls(pbx_harness, tmp_path, request):
    """Call A ends before the backup, call B is up while it starts, call C is
    dialed while the backup's read transaction is open (from its step hook)
    and completes; the restore has A complete with its recording, B as it
    was, and not C (it came after the copy's moment)."""
    from simkit.bridge_env import BridgeEnv
    env = BridgeEnv(pbx_harness, tmp_path).start()
    try:
        desk = pbx_harness.desk_phone("8001")
        trunk = pbx_harness.trunk("answer_hangup.xml", duration_ms=1000)
        a = env.dial("8001", "13812345001")
        assert trunk.wait(30) == 0 and desk.wait(30) == 0
        assert env.wait_final(a, recording=True).outcome == "answered"

        # B and C both reach the customer through one trunk party
        pbx_harness.trunk("answer_hangup.xml", duration_ms=4000, calls=2)
        pbx_harness.desk_phone("8002")
        b = env.dial("8002", "13812345002")
        env.wait_state(b, "connected")

        steps, dialed = [], []

        def during_the_copy():
            steps.append(1)
            if not dialed:
                pbx_harness.desk_phone("8003")
                dialed.append(env.dial("8003", "13812345003"))
                call = env.wait_final(dialed[0], recording=True)
                assert (call.state, call.outcome) == ("ended", "answered")

        archive = tmp_path / "live.tar"
        manifest = backup.create(env.settings, archive, pages_per_step=4,
                                 on_step=during_the_copy)
        assert dialed and len(steps) > 2  # the copy went on after the dial
        assert env.wait_final(b).outcome == "answered"
    finally:
        env.stop()
    target = make_home(tmp_path, "target", "sqlite", request)
    backup.restore(target, archive)
    engine = db.make_engine(target.database_url)
    with db.session_factory(engine)() as s:
        calls = {c.id: c for c in s.scalars(select(Call))}
    engine.dispose()
    assert set(calls) == {a, b}
    assert (calls[a].state, calls[a].outcome) == ("ended", "answered")
    assert calls[b].state == "connected"
    restored = config.load(target.config_path, environ={})
    data = (restored.recordings_dir / calls[a].recording_path).read_bytes()
    assert hashlib.sha256(data).hexdigest() == calls[a].recording_sha256
    assert counts(restored)["calls"] == manifest["database"]["tables"]["calls"] == 2
