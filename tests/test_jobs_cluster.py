"""Two jobs daemons (`python -m jobs`) of two nodes (pbx_name node-a and
node-b) on one PostgreSQL: each cluster-once job runs on one of them, once
per period, and says where (khhf.leases, `khhf status`); node-a killed
(SIGKILL) in the middle of a round loses the round's lease when it runs
out, node-b takes it over and the round is made once. Racing takers of one
lease: tests/test_leases.py."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import insert, select, text

from khhf import config, db, health
from khhf.models import Customer, JobLease
from tests.test_jobs import (
    CUSTOMERS,
    ROOT,
    TZ,
    rounds,
    stored_jobs,
    wait_for,
    weekly_campaign_with_round_2_due,
)

pytestmark = pytest.mark.postgres
LEASE_SECONDS = 3


@pytest.fixture
def engine(pg_database):
    engine = pg_database("jobs_cluster")
    db.create_schema(engine)
    yield engine
    engine.dispose()


class Node:
    """One node's jobs daemon: its own home (heartbeat), its own pbx_name."""

    def __init__(self, tmp_path, engine, name):
        url = engine.url.render_as_string(hide_password=False).replace("+psycopg", "")
        home = tmp_path / name
        home.mkdir()
        self.settings = config.write_new(home / "khhf.conf", home=home, database_url=url,
                                         pbx_name=name, timezone=TZ)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("KHHF_")}
        self.log = home / "jobs.log"
        with self.log.open("w") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "jobs", "--config", str(self.settings.config_path),
                 "--lease-seconds", str(LEASE_SECONDS)], cwd=ROOT, env=environ, stderr=err)

    def text(self) -> str:
        return self.log.read_text()

    def started(self) -> bool:
        assert self.proc.poll() is None, self.text()
        return "campaigns checked" in self.text()

    def ran_here(self) -> set[str]:
        """The jobs this daemon's heartbeat says ran here."""
        beat = self.settings.home / "run" / "jobs.json"
        return set(json.loads(beat.read_text())["state"]["runs"]) if beat.exists() else set()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(timeout=60) == 0, self.text()


def lease(engine, name) -> JobLease | None:
    with db.session_factory(engine)() as s:
        return s.scalars(select(JobLease).where(JobLease.name == name)).first()


def test_two_nodes_run_each_job_once_and_a_killed_nodes_round_is_taken_over(engine, tmp_path):
    cid = weekly_campaign_with_round_2_due(engine)
    with db.unit_of_work(db.session_factory(engine)) as s:   # a round of some size
        county_id = s.scalar(select(Customer.county_id))
        s.execute(insert(Customer), [{"phone": f"1390{i:07d}", "name": f"客户{i}",
                                      "county_id": county_id} for i in range(500)])
    round_2 = f"campaign-{cid}-round-2"
    # the round's rows wait for this lock: node-a is mid-round as long as we like
    blocker = engine.connect()
    blocker.execute(text("LOCK TABLE campaign_cycles IN EXCLUSIVE MODE"))
    a = Node(tmp_path, engine, "node-a")
    b = None
    try:
        wait_for(lambda: "round 2 due; making it" in a.text() and lease(engine, round_2),
                 "node-a in the round")
        wait_for(lambda: all(lease(engine, j) and lease(engine, j).finished_at
                             for j in ("reports", "distributions")), "node-a's first runs")
        b = Node(tmp_path, engine, "node-b")
        # node-b fires the same jobs at its start: they ran within their
        # period (300 s, 60 s), so not again; the round is held, so it waits
        wait_for(lambda: f"{round_2}: held by node-a" in b.text(),
                 "node-b finding the round held by node-a")
        killed = time.monotonic()
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(30)
        blocker.rollback()
        wait_for(lambda: f"{round_2}: taken over from node-a" in b.text(),
                 "node-b taking the round over")
        print(f"node-b took the round over {time.monotonic() - killed:.1f} s after node-a's "
              f"kill (lease {LEASE_SECONDS} s)")
        wait_for(lambda: stored_jobs(engine) == [f"campaign-{cid}-round-3"],
                 "round 2 made by node-b")
        # where each ran: the leases, the heartbeats, `khhf status`
        for job in ("reports", "distributions"):
            assert (lease(engine, job).node, lease(engine, job).runs) == ("node-a", 1), job
        assert (lease(engine, round_2).node, lease(engine, round_2).ok,
                lease(engine, round_2).runs) == ("node-b", True, 2)
        # log rotation is per node: node-b did its own; it ran no report
        wait_for(lambda: {"pbx-logs", "campaign-rounds"} <= b.ran_here(), "node-b's heartbeat")
        assert not {"reports", "distributions"} & b.ran_here()
        status = health.check_cluster_jobs(b.settings, engine).detail
        assert f"campaign-rounds ({round_2}) on node-b" in status
        assert "reports on node-a" in status
    finally:
        blocker.close()
        a.stop()
        if b is not None:
            b.stop()
    assert rounds(engine, cid) == [(1, CUSTOMERS), (2, CUSTOMERS + 500)]
    assert "round 2 due; 507 tasks made" in b.text()
