"""A distribution larger than one chunk is a run (khhf.services.distribution):
written a chunk per transaction, shown unfinished until it ends, refusing
another distribution meanwhile, and finished exactly once after its
writer stopped. On SQLite and PostgreSQL, with chunks of a few tasks."""

import datetime as dt

import pytest
from sqlalchemy import func, select

from khhf import audit, db
from khhf.models import AuditLog, Campaign, DistributionRun, Task, User
from khhf.services import ValidationError, campaigns, distribution, tasks
from tests.test_campaigns import TODAY, new_campaign, seed


@pytest.fixture(params=["sqlite", "postgresql"])
def factory(request, tmp_path):
    if request.param == "sqlite":
        engine = db.make_engine(f"sqlite:///{tmp_path / 'runs.db'}")
    else:
        engine = request.getfixturevalue("pg_database")("runs")
    db.create_schema(engine)
    yield db.session_factory(engine)
    engine.dispose()


def managers_of(factory, cid) -> dict:
    with factory() as s:
        return dict(s.execute(select(Task.id, Task.manager_id).where(Task.campaign_id == cid))
                    .all())


def campaign_ready(factory):
    ids = seed(factory)
    cid = new_campaign(factory, ids, cycle="once", starts_on=TODAY, ends_on=TODAY)
    with db.unit_of_work(factory) as s:
        campaigns.activate(s, None, "", s.get(Campaign, cid), today=TODAY)
    return ids, cid


def test_a_run_writes_the_same_split_as_one_transaction(factory):
    ids, cid = campaign_ready(factory)
    before = managers_of(factory, cid)
    with factory() as s:
        expected = distribution.plan(s, s.get(Campaign, cid), "average",
                                     manager_ids=[ids["a2"], ids["a3"]])
    with db.unit_of_work(factory) as s:
        result = distribution.commit(s, s.get(User, ids["admin"]), "10.0.0.9",
                                     s.get(Campaign, cid), "average",
                                     manager_ids=[ids["a2"], ids["a3"]], chunk_rows=3)
    assert result.run_id is not None and result.moved == expected.moved > 3
    # committed, not yet written: nothing moved, and the campaign says so
    assert managers_of(factory, cid) == before
    with factory() as s:
        run = distribution.unfinished(s, cid)
        assert run is not None and (run.applied, run.total) == (0, expected.moved)
        entry = s.scalars(select(AuditLog).where(AuditLog.detail.like("%tasks_by_manager%"))
                          ).one()
        assert audit.load_detail(entry)["run"] == run.id
    with factory() as s:
        run = distribution.finish(s, result.run_id, chunk_rows=3)
        assert run.applied == run.total == run.moved == expected.moved
        assert run.finished_at is not None and run.moves is None
        assert distribution.unfinished(s, cid) is None
    final = managers_of(factory, cid)
    assert sorted(final.values()) == sorted(
        m for m, n in expected.counts.items() for _ in range(n))
    assert {t: m for t, m, _ in expected.moves} == {
        t: final[t] for t, _, _ in expected.moves}


def test_a_stopped_run_is_finished_once_and_refuses_another_meanwhile(factory):
    ids, cid = campaign_ready(factory)
    had = sum(m == ids["a3"] for m in managers_of(factory, cid).values())
    with db.unit_of_work(factory) as s:
        result = distribution.commit(s, None, "", s.get(Campaign, cid), "average",
                                     manager_ids=[ids["a3"]], chunk_rows=2)
    # the writer wrote one chunk and stopped
    with db.unit_of_work(factory) as s:
        assert distribution.apply_chunk(s, result.run_id, chunk_rows=2) is False
    half = managers_of(factory, cid)
    assert sum(m == ids["a3"] for m in half.values()) == had + 2
    # meanwhile: a task is being called, another is reassigned by hand;
    # both are left alone by the rest of the run
    with db.unit_of_work(factory) as s:
        left = s.scalars(select(Task).where(Task.campaign_id == cid,
                                            Task.manager_id != ids["a3"])
                         .order_by(Task.id.desc()).limit(2)).all()
        tasks.dial(left[0])
        other = ids["a1"] if left[1].manager_id != ids["a1"] else ids["a2"]
        distribution.reassign(s, None, "", s.get(Campaign, cid), [left[1].id], other)
        busy, by_hand = (left[0].id, left[0].manager_id), left[1].id
    with db.unit_of_work(factory) as s, pytest.raises(ValidationError) as refused:
        distribution.commit(s, None, "", s.get(Campaign, cid), "auto")
    assert "still being written" in refused.value.problems[0].message
    with factory() as s:
        assert distribution.resume(s) == []  # not stale yet
        assert distribution.resume(s, stale_after=dt.timedelta(0)) == [result.run_id]
        assert distribution.resume(s, stale_after=dt.timedelta(0)) == []
        run = s.get(DistributionRun, result.run_id)
        assert run.finished_at is not None and run.moved == run.total - 2
    final = managers_of(factory, cid)
    assert final[busy[0]] == busy[1] and final[by_hand] == other
    assert sum(m == ids["a3"] for m in final.values()) == len(final) - 2
    # a chunk of a finished run writes nothing
    with db.unit_of_work(factory) as s:
        assert distribution.apply_chunk(s, result.run_id, chunk_rows=2) is True
        assert s.scalar(select(func.count()).select_from(DistributionRun)) == 1
