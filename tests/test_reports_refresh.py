"""Keeping the reports' daily sums up to date: `khhf reports refresh` and
`check` on the command line, and the timed-jobs daemon's refresh job."""

from __future__ import annotations

import datetime as dt
import time

import pytest
from sqlalchemy import select

from jobs.scheduler import Jobs
from khhf import config, db
from khhf.models import ReportState, utcnow
from khhf.services import reports
from khhfcli import main as cli
from simkit import report_data


@pytest.fixture
def world(tmp_path):
    settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path)
    engine = db.make_engine(settings.database_url)
    db.create_schema(engine)
    with db.unit_of_work(db.session_factory(engine)) as s:
        report_data.generate(s, start=utcnow() - dt.timedelta(days=6), days=5,
                             tasks_per_manager=8)
    yield str(tmp_path / "khhf.conf"), settings, engine
    engine.dispose()


def test_refresh_then_check_on_the_command_line(world, capsys):
    conf, settings, engine = world
    assert cli.main(["--config", conf, "reports", "refresh"]) == 0
    assert "rebuilt" in capsys.readouterr().out
    today = settings.local(utcnow()).date()
    first = (today - dt.timedelta(days=7)).isoformat()
    assert cli.main(["--config", conf, "reports", "check", "--from", first]) == 0
    assert "equal the direct counts" in capsys.readouterr().out
    # a stored sum tampered with is found, and a refresh of that day mends it
    with db.unit_of_work(db.session_factory(engine)) as s:
        row = s.scalar(select(reports.ReportDaily).where(reports.ReportDaily.calls_out > 0)
                       .limit(1))
        row.calls_out += 5
        day = row.day.isoformat()
    assert cli.main(["--config", conf, "reports", "check", "--from", first]) == 1
    assert "stored" in capsys.readouterr().err
    assert cli.main(["--config", conf, "reports", "refresh", "--from", day, "--to", day]) == 0
    assert cli.main(["--config", conf, "reports", "check", "--from", first]) == 0


def test_a_bad_day_is_one_clear_sentence(world, capsys):
    conf, _settings, _engine = world
    with pytest.raises(SystemExit, match="YYYY-MM-DD"):
        cli.main(["--config", conf, "reports", "refresh", "--from", "1.11.2026"])


def test_the_jobs_daemon_refreshes_the_sums(world):
    _conf, settings, engine = world
    jobs = Jobs(engine, settings.timezone, report_seconds=3600)
    jobs.start()
    try:
        deadline = time.monotonic() + 60
        while True:
            with db.session_factory(engine)() as s:
                if s.get(ReportState, 1) is not None:
                    break
            if time.monotonic() > deadline:
                pytest.fail("the jobs daemon did not refresh the reports")
            time.sleep(0.2)
    finally:
        jobs.shutdown()
    today = settings.local(utcnow()).date()
    with db.session_factory(engine)() as s:
        assert reports.check(s, settings.timezone, today - dt.timedelta(days=7), today) == []
        assert reports.summary(s, reports.Filter(today - dt.timedelta(days=7), today)).calls_out
