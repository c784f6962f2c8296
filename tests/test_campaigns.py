"""Task types, campaigns and their rounds, distribution and progress, on
SQLite and PostgreSQL."""

import datetime as dt

import pytest
from sqlalchemy import event, func, select

from khhf import audit, db
from khhf.models import AuditLog, Campaign, CampaignCycle, ResultCode, Task, TaskType, User
from khhf.services import ValidationError, campaigns, distribution, tasks
from simkit import factories

TODAY = dt.date(2026, 11, 28)


@pytest.fixture(params=["sqlite", "postgresql"])
def factory(request, tmp_path):
    if request.param == "sqlite":
        engine = db.make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    else:
        engine = request.getfixturevalue("pg_database")("campaigns")
    db.create_schema(engine)
    yield db.session_factory(engine)
    engine.dispose()


def seed(factory, customers=(5, 3, 0), departed_customers=2):
    """County a: managers a1, a2, a3 (active) with `customers` each, a
    departed manager ax with `departed_customers`; county b: b1 with 4."""
    with db.unit_of_work(factory) as s:
        campaigns.ensure_standard_types(s)
        a, b = factories.county(s, "a", "A"), factories.county(s, "b", "B")
        ms = {no: factories.manager(s, a, no) for no in ("a1", "a2", "a3", "ax")}
        ms["b1"] = factories.manager(s, b, "b1")
        phone = iter(range(13800000000, 13900000000))
        for no, n in zip(("a1", "a2", "a3", "ax"), (*customers, departed_customers)):
            for _ in range(n):
                factories.customer(s, a, str(next(phone)), ms[no])
        factories.customer(s, a, str(next(phone)), None)           # nobody's customer
        dnc = factories.customer(s, a, str(next(phone)), ms["a1"])
        dnc.do_not_call = True
        for _ in range(4):
            factories.customer(s, b, str(next(phone)), ms["b1"])
        ms["ax"].status, ms["ax"].departed_at = "departed", dt.datetime(2026, 1, 1)
        ids = {no: m.id for no, m in ms.items()}
        ids.update(county_a=a.id, county_b=b.id,
                   admin=factories.user(s, "admin", "admin").id,
                   sup_a=factories.user(s, "sup_a", "supervisor", a).id,
                   revisit=s.scalar(select(TaskType.id).where(TaskType.code == "revisit")))
    return ids


def new_campaign(factory, ids, by="admin", **fields):
    values = dict(county_id=ids["county_a"], task_type_id=ids["revisit"], name="十一月回访",
                  cycle="weekly", starts_on=TODAY - dt.timedelta(days=8), ends_on=None)
    values.update(fields)
    with db.unit_of_work(factory) as s:
        return campaigns.create_campaign(s, s.get(User, ids[by]), "10.0.0.9", **values).id


def test_standard_types_are_made_once_with_their_codes(factory):
    with db.unit_of_work(factory) as s:
        assert campaigns.ensure_standard_types(s) == 3
        assert campaigns.ensure_standard_types(s) == 0
    with factory() as s:
        types = {t.code: t for t in s.scalars(select(TaskType))}
        assert set(types) == {"revisit", "marketing", "survey"}
        labels = {c.code: (c.label, c.is_final) for c in types["survey"].result_codes}
        assert labels["1"] == ("调查成功", True) and labels["3"] == ("无人接听", False)
        assert labels["6"] == ("预约再拨", False) and types["revisit"].script


def test_task_type_validation_names_every_problem_and_writes_nothing(factory):
    ids = seed(factory)
    with factory() as s:
        with pytest.raises(ValidationError) as err:
            campaigns.save_task_type(
                s, s.get(User, ids["admin"]), "", None, code="Revisit!", name="", max_attempts="0",
                codes=[{"code": "123", "label": "x", "is_final": True},
                       {"code": "2", "label": "a"}, {"code": "2", "label": "b"}])
        fields = [p.field for p in err.value.problems]
        assert {"code", "name", "max_attempts", "codes"} <= set(fields)
        assert fields.count("codes") == 2  # 3 digits; 2 twice
        s.rollback()
        assert s.scalar(select(func.count()).select_from(TaskType)) == 3


def test_task_type_update_keeps_used_codes(factory):
    ids = seed(factory)
    with db.unit_of_work(factory) as s:
        admin = s.get(User, ids["admin"])
        t = campaigns.save_task_type(
            s, admin, "", None, code="care", name="关怀", script="您好", max_attempts=2,
            codes=[{"code": "1", "label": "已关怀", "is_success": True, "is_final": True},
                   {"code": "3", "label": "无人接听"}])
        type_id = t.id
        c = s.scalar(select(factories.Customer).limit(1))
        task = factories.task(s, c, None, t, status="done")
        assert task.result_code.code == "1"
    with db.unit_of_work(factory) as s:
        t = s.get(TaskType, type_id)
        with pytest.raises(ValidationError, match="already used"):
            campaigns.save_task_type(s, None, "", t, code="care", name="关怀", max_attempts=2,
                                     codes=[{"code": "3", "label": "无人接听",
                                             "is_final": True}])
    with db.unit_of_work(factory) as s:
        t = s.get(TaskType, type_id)
        campaigns.save_task_type(s, s.get(User, ids["admin"]), "", t, code="care",
                                 name="客户关怀", max_attempts=4, script="新话术",
                                 codes=[{"code": "1", "label": "关怀成功", "is_final": True},
                                        {"code": "12", "label": "改天再打"}])
    with factory() as s:
        t = s.get(TaskType, type_id)
        assert (t.name, t.max_attempts, t.script) == ("客户关怀", 4, "新话术")
        assert [(c.code, c.label, c.is_final) for c in t.result_codes] == \
            [("1", "关怀成功", True), ("12", "改天再打", False)]
        log = s.scalars(select(AuditLog).where(AuditLog.object_type == "task_type",
                                               AuditLog.action == "update")).all()
        assert len(log) == 1 and "客户关怀" in log[0].detail


def test_weekly_campaign_rounds_are_made_once_each_and_skip_do_not_call(factory):
    ids = seed(factory)
    cid = new_campaign(factory, ids)
    with db.unit_of_work(factory) as s:
        # started 8 days ago: rounds 1 and 2 are due
        made = campaigns.activate(s, s.get(User, ids["admin"]), "", s.get(Campaign, cid),
                                  today=TODAY)
    # county a: 5 + 3 + 0 + 2 (departed's) + 1 (nobody's) = 11 callable customers
    assert made == 22
    with db.unit_of_work(factory) as s:
        c = s.get(Campaign, cid)
        assert campaigns.create_due_rounds(s, c, TODAY)[1][1] == 0  # nothing new
        assert campaigns.next_round(s, c) == (3, TODAY - dt.timedelta(days=8) + dt.timedelta(
            weeks=2))
    with factory() as s:
        cycles = s.scalars(select(CampaignCycle).where(CampaignCycle.campaign_id == cid)
                           .order_by(CampaignCycle.seq)).all()
        assert [(c.seq, c.starts_on, c.ends_on) for c in cycles] == [
            (1, TODAY - dt.timedelta(days=8), TODAY - dt.timedelta(days=2)),
            (2, TODAY - dt.timedelta(days=1), TODAY + dt.timedelta(days=5))]
        per_manager = dict(s.execute(select(Task.manager_id, func.count()).where(
            Task.cycle_id == cycles[1].id).group_by(Task.manager_id)).all())
        # own active managers keep their customers; the departed's 2 and the
        # unowned 1 go to the least loaded (a3 with 0, then a3/a2 by load)
        assert per_manager[ids["a1"]] == 5 and ids["ax"] not in per_manager
        assert None not in per_manager and sum(per_manager.values()) == 11
        assert per_manager[ids["a3"]] + per_manager[ids["a2"]] == 6
        assert per_manager[ids["a3"]] == 3


def test_monthly_rounds_clamp_to_month_end_and_stop_at_the_last_day():
    c = Campaign(cycle="monthly", starts_on=dt.date(2026, 1, 31), ends_on=dt.date(2026, 4, 15),
                 status="active")
    assert [campaigns.round_period(c, k) for k in (1, 2, 3, 4, 5)] == [
        (dt.date(2026, 1, 31), dt.date(2026, 2, 27)), (dt.date(2026, 2, 28), dt.date(2026, 3, 30)),
        (dt.date(2026, 3, 31), dt.date(2026, 4, 15)), None, None]
    assert campaigns.due_seqs(c, dt.date(2026, 3, 1)) == [1, 2]


def test_campaign_validation_and_supervisor_county(factory):
    ids = seed(factory)
    with factory() as s:
        with pytest.raises(ValidationError) as err:
            campaigns.create_campaign(s, s.get(User, ids["sup_a"]), "", county_id=ids["county_b"],
                                      task_type_id=999, name="", cycle="daily",
                                      starts_on="2026-13-01", ends_on="x",
                                      selection="managers", manager_ids=[ids["a1"]])
        assert {p.field for p in err.value.problems} == {
            "county_id", "task_type_id", "name", "cycle", "starts_on", "ends_on", "manager_ids"}


def test_selection_of_managers_calls_only_their_customers(factory):
    ids = seed(factory)
    cid = new_campaign(factory, ids, by="sup_a", cycle="once", starts_on=TODAY,
                       ends_on=TODAY + dt.timedelta(days=6), selection="managers",
                       manager_ids=[ids["a2"]])
    with db.unit_of_work(factory) as s:
        assert campaigns.activate(s, s.get(User, ids["sup_a"]), "", s.get(Campaign, cid),
                                  today=TODAY) == 3


def test_average_distribution_preview_then_commit(factory):
    ids = seed(factory)
    cid = new_campaign(factory, ids, cycle="once", starts_on=TODAY, ends_on=TODAY)
    with db.unit_of_work(factory) as s:
        campaigns.activate(s, None, "", s.get(Campaign, cid), today=TODAY)
    with factory() as s:
        preview = distribution.plan(s, s.get(Campaign, cid), "average")
        assert preview.total == 11
        assert preview.counts == {ids["a1"]: 4, ids["a2"]: 4, ids["a3"]: 3}
        # the preview wrote nothing
        assert s.scalar(select(func.count()).where(Task.manager_id == ids["a1"])) == 5
        again = distribution.plan(s, s.get(Campaign, cid), "average")
        assert again.moves == preview.moves  # deterministic
    with db.unit_of_work(factory) as s:
        done = distribution.commit(s, s.get(User, ids["admin"]), "10.0.0.9",
                                   s.get(Campaign, cid), "average",
                                   manager_ids=[ids["a2"], ids["a3"]])
        assert done.counts == {ids["a2"]: 6, ids["a3"]: 5}
    with factory() as s:
        counts = dict(s.execute(select(Task.manager_id, func.count()).where(
            Task.campaign_id == cid).group_by(Task.manager_id)).all())
        assert counts == {ids["a2"]: 6, ids["a3"]: 5}
        entry = s.scalars(select(AuditLog).where(AuditLog.detail.like("%tasks_by_manager%"))
                          ).one()
        assert entry.ip == "10.0.0.9" and audit.load_detail(entry)["changes"][
            "tasks_by_manager"][1] == "a2 6, a3 5"


def test_auto_distribution_never_gives_tasks_to_departed_managers(factory):
    ids = seed(factory)
    cid = new_campaign(factory, ids, cycle="once", starts_on=TODAY, ends_on=TODAY)
    with db.unit_of_work(factory) as s:
        campaigns.activate(s, None, "", s.get(Campaign, cid), today=TODAY)
        distribution.commit(s, None, "", s.get(Campaign, cid), "average",
                            manager_ids=[ids["a1"]])
        # one task is being called: it must not move
        busy = s.scalar(select(Task).where(Task.campaign_id == cid).order_by(Task.id).limit(1))
        tasks.dial(busy)
        busy_id = busy.id
    with db.unit_of_work(factory) as s:
        result = distribution.commit(s, None, "", s.get(Campaign, cid), "auto")
        assert ids["ax"] not in result.counts
    with factory() as s:
        counts = dict(s.execute(select(Task.manager_id, func.count()).where(
            Task.campaign_id == cid).group_by(Task.manager_id)).all())
        assert s.get(Task, busy_id).manager_id == ids["a1"]
        assert ids["ax"] not in counts and sum(counts.values()) == 11
        assert counts[ids["a2"]] >= 3


def test_large_move_on_sqlite_sets_the_manager_index_aside_and_rebuilds_it(tmp_path,
                                                                          monkeypatch):
    """A move of a large share of the tasks drops ix_tasks_manager_status
    and builds it again from its stored definition, in the same
    transaction: the moves are right, the index is back, unchanged, and a
    failed distribution leaves it in place."""
    engine = db.make_engine(f"sqlite:///{tmp_path / 'big.db'}")
    db.create_schema(engine)
    factory = db.session_factory(engine)
    monkeypatch.setattr(distribution, "SET_ASIDE_MIN_MOVES", 1)
    definition = "SELECT sql FROM sqlite_master WHERE name = 'ix_tasks_manager_status'"
    with engine.connect() as conn:
        before = conn.exec_driver_sql(definition).scalar()
    ids = seed(factory)
    cid = new_campaign(factory, ids, cycle="once", starts_on=TODAY, ends_on=TODAY)
    with db.unit_of_work(factory) as s:
        campaigns.activate(s, None, "", s.get(Campaign, cid), today=TODAY)
    statements = []
    event.listen(engine, "before_cursor_execute",
                 lambda conn, cursor, sql, *args: statements.append(sql))
    with db.unit_of_work(factory) as s:
        distribution.commit(s, None, "", s.get(Campaign, cid), "average",
                            manager_ids=[ids["a2"], ids["a3"]])
    assert "DROP INDEX ix_tasks_manager_status" in statements
    with factory() as s:
        counts = dict(s.execute(select(Task.manager_id, func.count()).where(
            Task.campaign_id == cid).group_by(Task.manager_id)).all())
        assert counts == {ids["a2"]: 6, ids["a3"]: 5}
        # the page's query reads the rebuilt index
        plan = " ".join(str(r) for r in s.connection().exec_driver_sql(
            "EXPLAIN QUERY PLAN SELECT id FROM tasks WHERE manager_id = 1 AND status = 'pending'"))
        assert "ix_tasks_manager_status" in plan
    with engine.connect() as conn:
        assert conn.exec_driver_sql(definition).scalar() == before
    # a distribution that fails after the index was dropped rolls it back too
    with factory() as s:
        db.begin_write(s)
        with pytest.raises(RuntimeError):
            with distribution._sqlite_manager_index_set_aside(s.connection(), 10**6):
                raise RuntimeError("stop")
        s.rollback()
    with engine.connect() as conn:
        assert conn.exec_driver_sql(definition).scalar() == before
    engine.dispose()


def test_manual_reassignment_and_its_refusals(factory):
    ids = seed(factory)
    cid = new_campaign(factory, ids, cycle="once", starts_on=TODAY, ends_on=TODAY)
    with db.unit_of_work(factory) as s:
        campaigns.activate(s, None, "", s.get(Campaign, cid), today=TODAY)
        task_ids = s.scalars(select(Task.id).where(Task.campaign_id == cid)
                             .order_by(Task.id).limit(2)).all()
        closed = s.scalar(select(Task).where(Task.campaign_id == cid).order_by(Task.id.desc())
                          .limit(1))
        tasks.cancel(closed)
        closed_id = closed.id
    with factory() as s:
        c = s.get(Campaign, cid)
        for manager, chosen, match in ((ids["ax"], task_ids, "active customer manager"),
                                       (ids["b1"], task_ids, "active customer manager"),
                                       (ids["a3"], [closed_id], "finished or cancelled"),
                                       (ids["a3"], [], "Select the tasks")):
            with pytest.raises(ValidationError, match=match):
                distribution.reassign(s, None, "", c, chosen, manager)
            s.rollback()
    with db.unit_of_work(factory) as s:
        assert distribution.reassign(s, None, "", s.get(Campaign, cid), task_ids,
                                     ids["a3"]) == 2
    with factory() as s:
        assert {s.get(Task, t).manager_id for t in task_ids} == {ids["a3"]}


def test_progress_counts_per_manager_and_result_code(factory):
    ids = seed(factory)
    cid = new_campaign(factory, ids, cycle="once", starts_on=TODAY, ends_on=TODAY)
    with db.unit_of_work(factory) as s:
        campaigns.activate(s, None, "", s.get(Campaign, cid), today=TODAY)
        a1_tasks = s.scalars(select(Task).where(Task.campaign_id == cid,
                                                Task.manager_id == ids["a1"])
                             .order_by(Task.id)).all()
        codes = {c.code: c for c in s.scalars(select(ResultCode).where(
            ResultCode.task_type_id == ids["revisit"]))}
        a1_tasks[0].attempts = 1
        tasks.file_result(a1_tasks[0], codes["1"])
        tasks.file_result(a1_tasks[1], codes["2"])
    with factory() as s:
        p = campaigns.progress(s, [cid])[cid]
        a1 = next(r for r in p["rows"] if r["manager_id"] == ids["a1"])
        assert (a1["assigned"], a1["dialed"], a1["done"]) == (5, 1, 2)
        assert a1["codes"] == {"回访成功": 1, "客户拒绝": 1}
        assert p["total"]["assigned"] == 11 and p["total"]["done"] == 2
