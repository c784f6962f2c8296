"""khhf.health's checks on real files, processes and databases (the whole
system, red and green: tests/test_health_system.py), /healthz's answer and
access, the daemons' log lines and the PBX log files' rotation."""

from __future__ import annotations

import datetime as dt
import gzip
import json
import logging
import os
import re
import subprocess
import sys

from sqlalchemy import select

from khhf import config, daemon, db, health, log_files, migrations
from khhf.models import Customer, Manager, SmsMessage, SmsStatus
from simkit.web import make_app, session_for

KHHF = [sys.executable, "-m", "khhfcli.main"]
ELEVEN_DIGITS = re.compile(r"(?<![0-9])[0-9]{11}(?![0-9])")


def _settings(tmp_path, **values):
    return config.write_new(tmp_path / "khhf.conf", home=tmp_path, **values)


def test_a_heartbeat_shows_a_working_daemon_and_nothing_else(tmp_path):
    settings = _settings(tmp_path)
    assert health.check_daemon(settings, "jobs").detail == "not running (no heartbeat)"
    # a real process beating, then killed without a chance to clean up
    child = subprocess.Popen([sys.executable, "-c", (
        "import sys, time\n"
        "from khhf import config, daemon\n"
        f"beat = daemon.Heartbeat(config.load({str(settings.config_path)!r}), 'jobs', 2)\n"
        "beat.keep()\n"
        "time.sleep(60)\n")])
    try:
        path = daemon.run_dir(settings) / "jobs.json"
        while not path.exists():
            assert child.poll() is None
        check = health.check_daemon(settings, "jobs")
        assert check.ok and check.detail.startswith("up since ") and f"pid {child.pid}" in check.detail
    finally:
        child.kill()
        child.wait()
    check = health.check_daemon(settings, "jobs")
    assert not check.ok and check.detail == f"not running (its process {child.pid} is gone)"
    assert "systemctl start khhf-jobs" in check.todo
    # alive but silent: a beat older than STALE_BEATS intervals
    beat = daemon.Heartbeat(settings, "jobs", interval=1)
    beat.beat()
    record = json.loads(path.read_text())
    record["beat_at"] = (dt.datetime.now(dt.timezone.utc)
                         - dt.timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    path.write_text(json.dumps(record))
    assert re.fullmatch(r"not responding \(last heartbeat 3\d s ago\)",  # 30 s, and a loaded host
                        health.check_daemon(settings, "jobs").detail)
    beat.clear()   # a clean stop leaves no beat
    assert not path.exists()


def test_the_database_check_sees_a_missing_sqlite_file(tmp_path):
    settings = _settings(tmp_path)
    engine = health.health_engine(settings)
    assert not health.check_database(engine).ok   # no file yet, and none is made
    assert not (tmp_path / "khhf.db").exists()
    db.create_schema(engine)
    assert health.check_database(engine) == health.Check(
        "database", True, f"reachable (sqlite), at head: revision {migrations.head()}")
    os.rename(tmp_path / "khhf.db", tmp_path / "moved.db")
    check = health.check_database(engine)
    assert (check.ok, check.detail) == (False, "the SQLite database file is missing")
    os.rename(tmp_path / "moved.db", tmp_path / "khhf.db")
    assert health.check_database(engine).ok
    engine.dispose()


def test_too_little_disk_for_recordings_is_red(tmp_path):
    assert health.check_disk(_settings(tmp_path, recordings_min_free_mb=1)).ok
    check = health.check_disk(_settings(tmp_path, recordings_min_free_mb=2**40))
    assert not check.ok and "recording_retention_days" in check.todo


def test_healthz_is_public_and_holds_no_personal_data(tmp_path):
    app, _ = make_app(tmp_path)
    with session_for(app) as s:
        customers = s.scalars(select(Customer)).all()
        managers = s.scalars(select(Manager)).all()
        assert customers and managers
        # a message whose fate is unknown: the outbox check turns red
        s.add(SmsMessage(direction="out", peer_number=customers[0].phone, body="您好",
                         status=SmsStatus.UNKNOWN))
        s.commit()
        secrets = {c.phone for c in customers} | {c.name for c in customers} | \
                  {m.mobile for m in managers if m.mobile} | \
                  {m.user.display_name for m in managers}
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["ok"] is False
    checks = {c["name"]: c for c in body["checks"]}
    assert list(checks) == ["agi", "bridge", "web", "smsgw", "jobs", "pbx", "bridge_lag",
                            "sms_outbox", "trunk", "smsc", "job_runs", "cluster_jobs", "database",
                            "disk"]
    assert checks["web"]["ok"]   # it answers: this request
    assert checks["sms_outbox"] == {"name": "sms_outbox", "ok": False,
                                    "detail": "0 queued, 1 unknown",
                                    "todo": checks["sms_outbox"]["todo"]}
    assert "khhf sms requeue" in checks["sms_outbox"]["todo"]
    assert checks["database"]["ok"] and "todo" not in checks["database"]
    text = response.get_data(as_text=True)
    assert not [s for s in secrets if s and s in text]
    assert not ELEVEN_DIGITS.findall(text)


def test_khhf_status_is_a_table_and_an_exit_code(tmp_path):
    settings = _settings(tmp_path)
    subprocess.run(KHHF + ["--config", str(settings.config_path), "init", "--no-admin"],
                   check=True, capture_output=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("KHHF_")}
    proc = subprocess.run(KHHF + ["--config", str(settings.config_path), "status"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1
    assert re.search(r"^database\s+ok\s+reachable \(sqlite\)", proc.stdout, re.M)
    assert re.search(r"^bridge\s+FAIL\s+not running \(no heartbeat\)", proc.stdout, re.M)
    assert "bridge: start it: `systemctl start khhf-bridge`" in proc.stdout
    quiet = subprocess.run(KHHF + ["--config", str(settings.config_path), "status", "--quiet"],
                           capture_output=True, text=True, env=env)
    assert quiet.returncode == 1 and "database" not in quiet.stdout and "bridge" in quiet.stdout


def test_a_log_line_is_one_line_with_its_level_and_no_number(capsys):
    formatter = daemon.OneLineFormatter(daemon.LOG_FORMAT)
    try:
        raise ValueError("INSERT ... [parameters: ('13912345678', '+8613712345678')]")
    except ValueError:
        record = logging.LogRecord("agi", logging.ERROR, __file__, 1, "call from %s failed",
                                   ("13812345678",), sys.exc_info())
    line = formatter.format(record)
    assert "\n" not in line and " ERROR agi: call from 138****5678 failed | Traceback" in line
    assert "139****5678" in line and "+86*******5678" in line
    assert not re.search(r"1[3-9][0-9]{9}", line)


def test_pbx_log_files_are_rotated_past_their_limit(tmp_path):
    settings = _settings(tmp_path)
    console, messages, _cdr = log_files.pbx_log_files(settings)
    messages.parent.mkdir(parents=True)
    first = b"x" * (2**20 + 1)
    messages.write_bytes(first)
    console.write_bytes(b"small\n")
    assert log_files.rotate_logs(settings, 2**20, 2) == [messages]
    assert messages.read_bytes() == b"" and console.read_bytes() == b"small\n"
    with gzip.open(messages.with_name("messages.log.1.gz")) as fh:
        assert fh.read() == first
    for n in range(3):
        messages.write_bytes(bytes([65 + n]) * (2**20 + 1))
        log_files.rotate_logs(settings, 2**20, 2)
    kept = sorted(p.name for p in messages.parent.glob("messages.log.*"))
    assert kept == ["messages.log.1.gz", "messages.log.2.gz"]   # keep=2
    with gzip.open(messages.with_name("messages.log.1.gz")) as fh:
        assert fh.read(1) == b"C"
