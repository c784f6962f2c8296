"""A job's lease (khhf.leases) on SQLite and PostgreSQL: one holder at a
time, once per period, released with the run's outcome, taken over only
when its holder stopped, and at once when that holder was this node's own
killed daemon. On PostgreSQL, racing takers get it exactly once."""

import subprocess
import threading
import time

import pytest
from sqlalchemy import select

from khhf import db, leases
from khhf.models import JobLease


@pytest.fixture
def engine(each_schema):
    return each_schema


def row(engine, name="reports") -> JobLease:
    with db.session_factory(engine)() as s:
        return s.scalars(select(JobLease).where(JobLease.name == name)).one()


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_one_holder_once_per_period_and_the_outcome_kept(engine):
    a = leases.Leases(engine, leases.Holder("node-a"))
    b = leases.Leases(engine, leases.Holder("node-b", pid=12345))
    with a.take("reports", min_gap=60) as lease:
        busy = b.take("reports", min_gap=60)
        assert isinstance(busy, leases.Busy) and busy.held and busy.holder.node == "node-a"
        assert lease.renew()
    # free again, but it ran less than a period ago: not again, not held
    busy = b.take("reports", min_gap=60)
    assert isinstance(busy, leases.Busy) and not busy.held
    assert "ran on node-a" in str(busy)
    done = row(engine)
    assert (done.node, done.ok, done.error, done.runs, done.expires_at) == \
        ("node-a", True, "", 1, None)
    assert done.finished_at >= done.started_at
    # a job whose period has passed runs anywhere; a failure is kept, and
    # does not count as the period's run
    with pytest.raises(ValueError):
        with b.take("reports", min_gap=0):
            raise ValueError("no report tables")
    failed = row(engine)
    assert (failed.node, failed.ok, failed.error, failed.runs) == \
        ("node-b", False, "ValueError: no report tables", 2)
    assert isinstance(a.take("reports", min_gap=60), leases.Lease)


def test_a_stopped_holder_is_taken_over_after_expiry_only(engine):
    a = leases.Leases(engine, leases.Holder("node-a"), seconds=1)
    b = leases.Leases(engine, leases.Holder("node-b", pid=12345))
    stopped = a.take("distributions")   # taken, then never renewed nor released
    busy = b.take("distributions", takeover=stopped.run)
    assert isinstance(busy, leases.Busy) and busy.held and 0 < busy.wait_seconds() <= 1
    time.sleep(1.2)
    assert isinstance(b.take("distributions", takeover=stopped.run), leases.Lease)
    # the stopped run cannot touch its successor's lease
    assert not stopped.renew()
    assert row(engine, "distributions").node == "node-b"
    # a takeover of a run that finished is no takeover
    c = leases.Leases(engine, leases.Holder("node-c", pid=12346))
    assert isinstance(c.take("distributions", takeover=stopped.run), leases.Busy)


def test_this_nodes_killed_daemon_does_not_make_its_successor_wait(engine):
    killed = leases.Leases(engine, leases.Holder("node-a", pid=dead_pid()), seconds=600)
    killed.take("sms_prompts")
    other_node = leases.Leases(engine, leases.Holder("node-b", pid=dead_pid()))
    assert isinstance(other_node.take("sms_prompts"), leases.Busy)   # waits for expiry
    restarted = leases.Leases(engine, leases.Holder("node-a"))
    with restarted.take("sms_prompts"):
        pass
    assert row(engine, "sms_prompts").runs == 2


def test_racing_takers_get_it_once(pg_database):
    engine = pg_database("lease_race")
    db.create_schema(engine)
    got, start = [], threading.Barrier(8)

    def take(i):
        start.wait()
        got.append(leases.Leases(engine, leases.Holder(f"node-{i}", pid=i + 1)).take(
            "backup", min_gap=3600))
    threads = [threading.Thread(target=take, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(isinstance(g, leases.Lease) for g in got) == 1
    assert row(engine, "backup").runs == 1
    engine.dispose()
