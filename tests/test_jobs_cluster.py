"""Two jobs daemons (`python -m jobs`) of two nodes (pbx_name node-a and
node-b) on one PostgreSQL: each cluster-once job runs on one of them, once
per period, and says where (khhf.leases, `khhf status`); the node killed
(SIGKILL) in the middle of a round loses the round's lease when it runs
out, the other node takes it over and the round is made once."""

import json
import os
import signal
import subprocess
import sys

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


def test_two_nodes_run_each_cluster_once_job_once_and_say_where(engine, tmp_path):
    cid = weekly_campaign_with_round_2_due(engine)
    nodes = [Node(tmp_path, engine, "node-a"), Node(tmp_path, engine, "node-b")]
    try:
        wait_for(lambda: all(n.started() for n in nodes), "both daemons started")
        wait_for(lambda: stored_jobs(engine) == [f"campaign-{cid}-round-3"], "round 2 made")
        wait_for(lambda: all(lease(engine, j) and lease(engine, j).finished_at
                             for j in ("reports", "distributions")), "the start's runs")
        # both schedulers fired these at start (periods 300 s and 60 s): one ran each
        for job, heartbeat_name in (("reports", "reports"), ("distributions", "distributions"),
                                    (f"campaign-{cid}-round-2", "campaign-rounds")):
            row = lease(engine, job)
            assert (row.runs, row.ok) == (1, True), job
            wait_for(lambda: any(heartbeat_name in n.ran_here() for n in nodes),
                     "the heartbeats (every 5 s)")
            ran = [n.settings.pbx_name for n in nodes if heartbeat_name in n.ran_here()]
            assert ran == [row.node], job
        # log rotation is per node: both did it
        wait_for(lambda: all("pbx-logs" in n.ran_here() for n in nodes), "both rotations")
        status = health.check_cluster_jobs(nodes[0].settings, engine).detail
        assert f"reports on {lease(engine, 'reports').node}" in status
        assert f"campaign-rounds (campaign-{cid}-round-2) on" in status
    finally:
        for n in nodes:
            n.stop()
    assert rounds(engine, cid) == [(1, CUSTOMERS), (2, CUSTOMERS)]


def test_a_node_killed_mid_round_is_taken_over_after_its_lease_runs_out(engine, tmp_path):
    cid = weekly_campaign_with_round_2_due(engine)
    with db.unit_of_work(db.session_factory(engine)) as s:   # a round of some size
        county_id = s.scalar(select(Customer.county_id))
        s.execute(insert(Customer), [{"phone": f"1390{i:07d}", "name": f"客户{i}",
                                      "county_id": county_id} for i in range(500)])
    # the round's rows wait for this lock: node-a is mid-round as long as we like
    blocker = engine.connect()
    blocker.execute(text("LOCK TABLE campaign_cycles IN EXCLUSIVE MODE"))
    a = Node(tmp_path, engine, "node-a")
    b = None
    try:
        wait_for(lambda: "round 2 due; making it" in a.text() and lease(
            engine, f"campaign-{cid}-round-2"), "node-a in the round")
        b = Node(tmp_path, engine, "node-b")
        wait_for(lambda: f"campaign-{cid}-round-2: held by node-a" in b.text(),
                 "node-b finding the round held by node-a")
        a.proc.send_signal(signal.SIGKILL)
        a.proc.wait(30)
        blocker.rollback()
        wait_for(lambda: f"campaign-{cid}-round-2: taken over from node-a" in b.text(),
                 "node-b taking the round over")
        wait_for(lambda: stored_jobs(engine) == [f"campaign-{cid}-round-3"],
                 "round 2 made by node-b")
    finally:
        blocker.close()
        a.stop()
        if b is not None:
            b.stop()
    row = lease(engine, f"campaign-{cid}-round-2")
    assert (row.node, row.ok, row.runs) == ("node-b", True, 2)
    assert rounds(engine, cid) == [(1, CUSTOMERS), (2, CUSTOMERS + 500)]
    assert "round 2 due; 507 tasks made" in b.text()
