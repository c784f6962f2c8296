"""Drill 6 (issue 19), short form: `python -m jobs` killed (SIGKILL) while
a 3,000-task campaign round is in its transaction, and while it queues a
burst of 100 SMS result prompts (simkit/drills/jobs.py). Restarted, it
finishes the round once (no task doubled, none missing) and the SMSC gets
every prompt once per call, counted per mobile."""

import pytest

from simkit.drills.jobs import jobs_killed


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def database_url(request):
    if request.param == "sqlite":
        return None
    engine = request.getfixturevalue("pg_database")("drill6")
    url = engine.url.render_as_string(hide_password=False).replace("+psycopg", "")
    engine.dispose()
    return url


def test_the_jobs_daemon_killed_mid_round_and_mid_burst(tmp_path, database_url):
    row = jobs_killed(short=True, workdir=tmp_path, database_url=database_url)
    assert row.violations() == [], row
    assert row.sms_once is True and row.sms_sent == 100
    assert "killed mid-round" in row.operator_saw and "nothing of it left" in row.operator_saw
    assert "killed mid-burst" in row.operator_saw
    # the operator saw the daemon gone while it was
    assert "jobs red (not running" in row.operator_saw
