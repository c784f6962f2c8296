"""Result filing (khhf.services.results) and the workspace's queries
(khhf.services.workspace): tabs, keyset pages, the next task progressive
dial takes, due and overdue call-backs. On SQLite and PostgreSQL, made from schema.sql."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from khhf import config, db
from khhf.models import AuditLog, Call, Feedback, ResultCode, Task
from khhf.services import ValidationError, results, tasks, workspace
from simkit import factories

# 11:00 in Beijing: inside the default calling window 08:00-21:00
NOW = dt.datetime(2026, 11, 27, 3, 0)
SETTINGS = config.Settings()


@pytest.fixture(params=["sqlite", "postgresql"])
def s(request, tmp_path):
    if request.param == "sqlite":
        engine = db.make_engine(f"sqlite:///{tmp_path / 'r.db'}")
    else:
        engine = request.getfixturevalue("pg_database")("results")
    db.create_schema(engine)
    with db.session_factory(engine)() as session:
        yield session
    engine.dispose()


@pytest.fixture
def world(s):
    county = factories.county(s, "demo", "示范县", unified="13900000000")
    m1 = factories.manager(s, county, "m1", desk="8001")
    m2 = factories.manager(s, county, "m2", desk="8002")
    revisit = factories.task_type(s)
    survey = factories.task_type(s, "survey", "调查", codes=(("1", "调查成功", True, True),))
    c1 = factories.customer(s, county, "13800000001", m1, name="王芳")
    c2 = factories.customer(s, county, "13800000002", m2, name="李强")
    codes = {c.label: c for c in s.scalars(select(ResultCode).where(
        ResultCode.task_type_id == revisit.id))}
    other = s.scalar(select(ResultCode).where(ResultCode.task_type_id == survey.id))
    return dict(m1=m1, m2=m2, c1=c1, c2=c2, codes=codes, other=other, county=county,
                t1=factories.task(s, c1, m1), t2=factories.task(s, c2, m2))


def file(s, world, code="回访成功", task="t1", user="m1", **kw):
    kw.setdefault("now", NOW)
    kw.setdefault("settings", SETTINGS)
    code_id = world["codes"][code].id if isinstance(code, str) else code
    return results.file_result(s, world[user].user, world[task].id, code_id, **kw)


def refused(s, world, match, **kw):
    feedback_before = s.scalar(select(func.count()).select_from(Feedback))
    with pytest.raises(ValidationError, match=match):
        file(s, world, **kw)
    assert s.scalar(select(func.count()).select_from(Feedback)) == feedback_before


def test_a_final_result_closes_the_task_writes_feedback_and_audits(s, world):
    feedback = file(s, world, note=" 满意 ")
    task = s.get(Task, world["t1"].id)
    assert (task.status, task.result_code_id) == ("done", world["codes"]["回访成功"].id)
    assert (feedback.channel, feedback.note, feedback.manager_id) == ("web", "满意",
                                                                     world["m1"].id)
    entry = s.scalar(select(AuditLog).where(AuditLog.object_type == "feedback"))
    assert entry.object_id == str(feedback.id) and entry.object_name == "王芳 138****0001"
    assert "回访成功" in entry.detail and "13800000001" not in entry.detail


def test_a_call_back_keeps_the_task_open_with_its_appointment(s, world):
    at = NOW + dt.timedelta(days=1)
    file(s, world, code="预约再拨", appointment_at=at, channel="sms")
    task = s.get(Task, world["t1"].id)
    assert (task.status, task.appointment_at) == ("pending", at)
    assert workspace.tab_of(task) == "callback"


def test_feedback_names_the_latest_call_of_the_task(s, world):
    tasks.dial(world["t1"])
    call = Call(direction="outbound", task_id=world["t1"].id, customer_number="13800000001",
                manager_id=world["m1"].id, state="ended", outcome="answered")
    s.add(call)
    s.flush()
    assert file(s, world).call_id == call.id


def test_refusals(s, world):
    refused(s, world, "not yours", user="m2")                      # another manager's task
    refused(s, world, "results of this task's type", code=world["other"].id)
    refused(s, world, "results of this task's type", code=987654)
    refused(s, world, "has passed", code="预约再拨", appointment_at=NOW - dt.timedelta(minutes=1))
    # 23:00 Beijing time is outside 08:00-21:00
    refused(s, world, "between 08:00-21:00", code="预约再拨",
            appointment_at=dt.datetime(2026, 11, 27, 15, 0))
    refused(s, world, "too far ahead", code="预约再拨", appointment_at=NOW + dt.timedelta(days=91))
    refused(s, world, "closes the task", code="回访成功", appointment_at=NOW + dt.timedelta(hours=1))
    refused(s, world, "too long", note="字" * 1001)
    refused(s, world, "not one of this task's calls", call_id=424242)
    file(s, world)
    refused(s, world, "already closed")                             # filed twice
    assert s.scalar(select(func.count()).select_from(Feedback)) == 1


def test_a_refusal_lists_every_problem(s, world):
    with pytest.raises(ValidationError) as error:
        file(s, world, code=world["other"].id, note="x" * 2000,
             appointment_at=NOW - dt.timedelta(hours=1))
    assert {p.field for p in error.value.problems} == {"result_code", "note", "appointment_at"}


def test_an_unknown_channel_is_a_bug(s, world):
    with pytest.raises(ValueError, match="unknown feedback channel"):
        file(s, world, channel="fax")


# -- the workspace's queries ---------------------------------------------------------
def make_tasks(s, world, n, **fields):
    out = []
    first = s.scalar(select(func.count()).select_from(Task))
    for i in range(first, first + n):
        c = factories.customer(s, world["county"], f"1390000{i:04d}", world["m1"], name=f"客户{i}")
        out.append(factories.task(s, c, world["m1"], **fields))
    return out


def test_tabs_partition_the_tasks_and_count_them(s, world):
    m1 = world["m1"]
    make_tasks(s, world, 3)
    make_tasks(s, world, 2, status="not_reached")
    make_tasks(s, world, 1, status="done")
    make_tasks(s, world, 1, status="dialing")
    make_tasks(s, world, 2, appointment_at=NOW)
    make_tasks(s, world, 1, priority=5)
    counts = workspace.counts(s, m1.id)
    assert counts == {"todo": 4, "callback": 3, "connected": 1, "not_reached": 2, "done": 1}
    for tab in workspace.TABS:
        listed = workspace.page(s, m1.id, tab).tasks
        assert len(listed) == counts[tab]
        assert all(workspace.tab_of(t) == tab for t in listed)


@pytest.mark.parametrize("tab,fields", [("todo", {}), ("done", {"status": "done"}),
                                        ("callback", {"appointment_at": NOW})])
def test_keyset_pages_walk_every_task_once(s, world, tab, fields):
    made = {t.id for t in make_tasks(s, world, 7, **fields)}
    if tab == "todo":
        made.add(world["t1"].id)
    seen, after = [], None
    while True:
        page = workspace.page(s, world["m1"].id, tab, after=after, size=3)
        seen += [t.id for t in page.tasks]
        if page.next_cursor is None:
            break
        after = page.next_cursor
    assert sorted(seen) == sorted(made) and len(seen) == len(set(seen))


def test_search_by_name_or_number(s, world):
    make_tasks(s, world, 12)
    page = workspace.page(s, world["m1"].id, "todo", search="客户11")
    assert [t.customer.name for t in page.tasks] == ["客户11"]
    page = workspace.page(s, world["m1"].id, "todo", search="0000-0003")
    assert {t.customer.phone for t in page.tasks} == {"13900000003"}
    page = workspace.page(s, world["m1"].id, "todo", search="000 0001")
    assert {t.customer.phone for t in page.tasks} == {"13800000001", "13900000010",
                                                      "13900000011", "13900000012",
                                                      "13900000013"}
    assert workspace.page(s, world["m1"].id, "todo", search="%").tasks == []


@pytest.mark.parametrize("cursor", ["x", "1.5", "-3", "9" * 30, "２", "20261127.1"])
def test_a_forged_cursor_is_refused(cursor):
    with pytest.raises(workspace.BadCursor):
        workspace.parse_cursor(cursor, "todo" if "." not in cursor else "done")


def test_next_due_takes_call_backs_then_priority_then_oldest(s, world):
    m1 = world["m1"].id
    later, *_ = make_tasks(s, world, 1, appointment_at=NOW + dt.timedelta(hours=1))
    urgent, *_ = make_tasks(s, world, 1, priority=5)
    due, *_ = make_tasks(s, world, 1, appointment_at=NOW - dt.timedelta(minutes=5))
    retry, *_ = make_tasks(s, world, 1, status="not_reached")
    order = []
    while (task := workspace.next_due(s, m1, NOW, exclude=tuple(order))) is not None:
        order.append(task.id)
    assert order == [due.id, urgent.id, world["t1"].id]
    assert later.id not in order and retry.id not in order


def test_next_due_skips_do_not_call_and_exhausted_tasks(s, world):
    world["c1"].do_not_call = True
    s.flush()
    assert workspace.next_due(s, world["m1"].id, NOW) is None


def test_due_and_overdue_call_backs(s, world):
    soon, *_ = make_tasks(s, world, 1, appointment_at=NOW + dt.timedelta(minutes=5))
    due, *_ = make_tasks(s, world, 1, appointment_at=NOW - dt.timedelta(minutes=5))
    late, *_ = make_tasks(s, world, 1, appointment_at=NOW - dt.timedelta(hours=2))
    assert [t.id for t in workspace.due_callbacks(s, world["m1"].id, NOW)] == [late.id, due.id]
    assert [workspace.is_overdue(t, NOW) for t in (soon, due, late)] == [False, False, True]
    [(manager, n, oldest)] = workspace.overdue_by_manager(s, world["county"].id, NOW)
    assert (manager.id, n, oldest) == (world["m1"].id, 1, late.appointment_at)
