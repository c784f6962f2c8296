"""The timed-jobs daemon makes a campaign's due round once, however it is
stopped and started around the due moment: the scheduler object on one
persistent job store, and the real `python -m jobs`, on SQLite and
PostgreSQL."""

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, inspect, select, text

from khhf import config, db
from khhf.models import CampaignCycle, Task
from khhf.services import campaigns
from simkit import factories

ROOT = Path(__file__).resolve().parent.parent
TZ = "Asia/Shanghai"
CUSTOMERS = 7


@pytest.fixture
def engine(each_schema):
    return each_schema


def weekly_campaign_with_round_2_due(engine) -> int:
    """A weekly campaign that started 7 days ago (local time) and whose
    round 1 was made on activation: round 2 is due since midnight."""
    today = dt.datetime.now(ZoneInfo(TZ)).date()
    with db.unit_of_work(db.session_factory(engine)) as s:
        campaigns.ensure_standard_types(s)
        county = factories.county(s, "j", "J")
        m = factories.manager(s, county, "j1")
        for i in range(CUSTOMERS):
            factories.customer(s, county, f"1381234{i:04d}", m)
        c = campaigns.create_campaign(s, None, "", county_id=county.id,
                                      task_type_id=s.scalar(select(campaigns.TaskType.id)),
                                      name="周回访", cycle="weekly",
                                      starts_on=today - dt.timedelta(days=7))
        campaigns.activate(s, None, "", c, today=today - dt.timedelta(days=7))
        return c.id


def rounds(engine, campaign_id):
    with db.session_factory(engine)() as s:
        cycles = s.execute(select(CampaignCycle.seq, func.count(Task.id))
                           .join(Task, Task.cycle_id == CampaignCycle.id, isouter=True)
                           .where(CampaignCycle.campaign_id == campaign_id)
                           .group_by(CampaignCycle.seq).order_by(CampaignCycle.seq)).all()
        return [tuple(r) for r in cycles]


def stored_jobs(engine):
    if not inspect(engine).has_table("apscheduler_jobs"):
        return []
    with engine.connect() as conn:
        return sorted(conn.execute(text("SELECT id FROM apscheduler_jobs")).scalars())


def wait_for(predicate, what, timeout=60):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_due_round_is_made_once_across_restarts_of_the_scheduler(engine):
    from jobs.scheduler import Jobs
    cid = weekly_campaign_with_round_2_due(engine)
    assert rounds(engine, cid) == [(1, CUSTOMERS)]
    # daemon A stores round 2's job, then stops before running it
    a = Jobs(engine, TZ)
    a.start(paused=True)
    assert a.sync() == [f"campaign-{cid}-round-2"]
    a.shutdown()
    assert rounds(engine, cid) == [(1, CUSTOMERS)]
    assert stored_jobs(engine) == [f"campaign-{cid}-round-2"]
    # daemon B starts after the due moment: the missed job runs, once
    b = Jobs(engine, TZ)
    b.start()
    try:
        wait_for(lambda: stored_jobs(engine) == [f"campaign-{cid}-round-3"],
                 "round 2 made and round 3's job stored")
    finally:
        b.shutdown()
    assert rounds(engine, cid) == [(1, CUSTOMERS), (2, CUSTOMERS)]
    # restarted once more: nothing new; round 3 waits for next week
    c = Jobs(engine, TZ)
    c.start()
    try:
        assert c.sync() == []
    finally:
        c.shutdown()
    assert rounds(engine, cid) == [(1, CUSTOMERS), (2, CUSTOMERS)]
    assert stored_jobs(engine) == [f"campaign-{cid}-round-3"]


def test_two_writers_racing_for_one_round_make_it_once(engine):
    """What keeps a round single even if two processes run its job: the
    round's UNIQUE row is written first, in the tasks' transaction."""
    import threading

    from jobs import scheduler
    cid = weekly_campaign_with_round_2_due(engine)
    scheduler._sessions, scheduler._timezone = db.session_factory(engine), TZ
    made, errors = [], []

    def run():
        try:
            made.append(scheduler.make_due_rounds(cid, 2))
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and sorted(made) == [0, 0, CUSTOMERS]
    assert rounds(engine, cid) == [(1, CUSTOMERS), (2, CUSTOMERS)]


def start_daemon(tmp_path, engine, name):
    url = engine.url.render_as_string(hide_password=False).replace("+psycopg", "")
    settings = config.write_new(tmp_path / f"{name}.conf", home=tmp_path, database_url=url)
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KHHF_")}
    log = tmp_path / f"{name}.log"
    with log.open("w") as err:
        proc = subprocess.Popen([sys.executable, "-m", "jobs", "--config",
                                 str(settings.config_path)], cwd=ROOT, env=environ, stderr=err)
    proc.log = log
    wait_for(lambda: "campaigns checked" in log.read_text() or proc.poll() is not None,
             "the daemon's first look at the campaigns")
    return proc


def stop(proc):
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode == 0, proc.log.read_text()
    return proc.log.read_text()


def test_the_daemon_process_makes_a_due_round_once_across_restarts(engine, tmp_path):
    cid = weekly_campaign_with_round_2_due(engine)
    first = start_daemon(tmp_path, engine, "a")
    try:
        wait_for(lambda: stored_jobs(engine) == [f"campaign-{cid}-round-3"],
                 "round 2 made by the daemon")
    finally:
        log = stop(first)
    assert "timed jobs running" in log and f"campaign {cid}: round 2 due; {CUSTOMERS} tasks" in log
    assert rounds(engine, cid) == [(1, CUSTOMERS), (2, CUSTOMERS)]
    # restarted (twice): nothing new, the next round's job is still stored
    for name in ("b", "c"):
        log = stop(start_daemon(tmp_path, engine, name))
        assert f"stored jobs: campaign-{cid}-round-3" in log
    assert rounds(engine, cid) == [(1, CUSTOMERS), (2, CUSTOMERS)]
    assert stored_jobs(engine) == [f"campaign-{cid}-round-3"]


def test_a_job_store_refused_for_a_moment_does_not_stop_the_scheduler():
    """APScheduler ended its thread (and every job of the daemon) when its
    job store raised while it looked for the next run: the soak's jobs
    daemon stopped prompting once SQLite's lock was refused after its busy
    timeout. The scheduler now looks again shortly."""
    import threading

    from apscheduler.jobstores.memory import MemoryJobStore
    from sqlalchemy.exc import OperationalError

    from jobs.scheduler import _Scheduler

    class RefusedOnce(MemoryJobStore):
        refused = False

        def get_next_run_time(self):
            if not RefusedOnce.refused:
                RefusedOnce.refused = True
                raise OperationalError("SELECT", {}, Exception("database is locked"))
            return super().get_next_run_time()

    ran = threading.Event()
    scheduler = _Scheduler(jobstores={"default": RefusedOnce()}, timezone="UTC")
    scheduler.start()
    try:
        scheduler.add_job(ran.set, "interval", seconds=0.2)
        assert ran.wait(30)
        assert RefusedOnce.refused
    finally:
        scheduler.shutdown(wait=False)
