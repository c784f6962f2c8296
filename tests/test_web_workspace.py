"""The manager's workspace over HTTP (Flask's test client on the demo data):
tabs and counts, search, pages, a task's page, result filing, reminders,
progressive dial's next task, the supervisor's overdue block, and that a
manager cannot reach another manager's task."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import func, select

from khhf.models import AuditLog, Customer, Feedback, Manager, ResultCode, Task, User, utcnow
from simkit.web import csrf_token, log_in, make_app, session_for

# the demo's calling window is 08:00-21:00; these tests must not depend on the clock
ALL_DAY = {"calling_window": "00:00-24:00"}


@pytest.fixture
def web(tmp_path):
    app, seeded = make_app(tmp_path, ALL_DAY)
    with session_for(app) as s:  # a "try again" code 预约再拨, if the demo has none
        type_id = s.scalar(select(Task.task_type_id).limit(1))
        if s.scalar(select(ResultCode).where(ResultCode.task_type_id == type_id,
                                             ResultCode.label == "预约再拨")) is None:
            s.add(ResultCode(task_type_id=type_id, code="6", label="预约再拨", is_final=False))
            s.commit()
    return app, seeded


def client_for(app, seeded, username):
    client = app.test_client()
    assert log_in(client, username, seeded["passwords"][username]).status_code == 302
    return client


def tasks_of(app, username):
    with session_for(app) as s:
        manager = s.scalar(select(Manager).join(User, User.id == Manager.user_id)
                           .where(User.username == username))
        return s.scalars(select(Task).where(Task.manager_id == manager.id)
                         .order_by(Task.id)).all()


def codes(app, label=None):
    """The demo tasks' type's result codes, {label: id}."""
    with session_for(app) as s:
        type_id = s.scalar(select(Task.task_type_id).limit(1))
        rows = {c.label: c.id for c in s.scalars(select(ResultCode).where(
            ResultCode.task_type_id == type_id))}
    return rows[label] if label else rows


def set_task(app, task_id, **fields):
    with session_for(app) as s:
        task = s.get(Task, task_id)
        for name, value in fields.items():
            setattr(task, name, value)
        s.commit()


def test_home_lists_the_todo_tab_with_counts_and_masked_phones(web):
    app, seeded = web
    client = client_for(app, seeded, "manager1")
    html = client.get("/manager/").get_data(as_text=True)
    n = len(tasks_of(app, "manager1"))
    assert 'data-tab="todo"' in html and "未拨打" in html and "待回电/预约" in html
    assert "已接通待反馈" in html and "已完成" in html
    assert f">{n}</span>" in html.replace("\n", "").replace(" ", "")
    assert "137****0001" in html and "13700000001" not in html
    assert 'src="/static/js/workspace.js"' in html and "<script>" not in html


def test_search_and_bad_query_parameters(web):
    app, seeded = web
    client = client_for(app, seeded, "manager1")
    html = client.get("/manager/?q=0001").get_data(as_text=True)
    assert "137****0001" in html and "137****0002" not in html
    assert client.get("/manager/?tab=nope").status_code == 400
    assert client.get("/manager/?after=x").status_code == 400
    assert client.get("/manager/?q=" + "9" * 65).status_code == 400
    assert client.get("/manager/?tab=done").status_code == 200


def tab_counts(html: str) -> dict[str, int]:
    return {tab: int(n) for tab, n in re.findall(
        r'data-tab="(\w+)".*?<span class="badge[^"]*">(\d+)</span>', html, re.DOTALL)}


def test_a_search_looks_in_every_tab_and_each_tab_counts_its_matches(web):
    app, seeded = web
    client = client_for(app, seeded, "manager1")
    mine = tasks_of(app, "manager1")
    with session_for(app) as s:
        [found] = s.scalars(select(Task).join(Customer).where(
            Task.id.in_([t.id for t in mine]), Customer.phone.endswith("0001"))).all()
    set_task(app, found.id, status="done")
    everything = tab_counts(client.get("/manager/").get_data(as_text=True))
    assert everything["todo"] == len(mine) - 1 and everything["done"] == 1
    # the search form names no tab: the match is in 已完成, and that is where it shows
    html = client.get("/manager/?q=0001").get_data(as_text=True)
    assert tab_counts(html) == {"todo": 0, "callback": 0, "connected": 0, "not_reached": 0,
                                "done": 1}
    assert 'data-tab="done" aria-current="page"' in html
    assert f'data-task="{found.id}"' in html and "137****0001" in html
    assert "与“0001”匹配的任务数" in html
    # every tab's link keeps the search, and a tab picked is shown, matches or not
    assert "/manager/?tab=todo&amp;q=0001" in html
    html = client.get("/manager/?tab=todo&q=0001").get_data(as_text=True)
    assert 'data-tab="todo" aria-current="page"' in html and "这里没有任务" in html
    assert tab_counts(html)["done"] == 1
    # nothing matches anywhere: every count 0
    html = client.get("/manager/?q=nobody").get_data(as_text=True)
    assert set(tab_counts(html).values()) == {0} and "这里没有任务" in html
    # the phone pages search the same way
    html = client.get("/m/?q=0001").get_data(as_text=True)
    assert f'data-task="{found.id}"' in html and "/m/?tab=done&amp;q=0001" in html


def test_a_manager_cannot_reach_another_managers_task(web):
    app, seeded = web
    theirs = tasks_of(app, "manager2")[0].id
    client = client_for(app, seeded, "manager1")
    assert client.get(f"/manager/tasks/{theirs}").status_code == 404
    mine = tasks_of(app, "manager1")[0].id
    token = csrf_token(client, f"/manager/tasks/{mine}")
    response = client.post(f"/manager/tasks/{theirs}/result",
                           data={"csrf_token": token, "result_code": codes(app, "回访成功")})
    assert response.status_code == 404
    with session_for(app) as s:
        assert s.get(Task, theirs).status == "pending"
    # and a supervisor or an administrator is not a manager
    supervisor = client_for(app, seeded, "supervisor")
    assert supervisor.get(f"/manager/tasks/{mine}").status_code == 403


def test_the_task_page_shows_customer_script_and_result_form(web):
    app, seeded = web
    task = tasks_of(app, "manager1")[0]
    html = client_for(app, seeded, "manager1").get(f"/manager/tasks/{task.id}").get_data(
        as_text=True)
    assert 'id="result-form"' in html and "1 回访成功" in html and "预约再拨" in html
    # the type's call script, with the manager's name in it
    script = html.split('id="script"')[1].split("</div>")[0]
    assert "打扰您一分钟" in script and "张伟" in script and "{经理}" not in script
    assert "呼叫" in html


def test_filing_a_result_moves_the_task_and_writes_feedback(web):
    app, seeded = web
    task = tasks_of(app, "manager1")[0]
    client = client_for(app, seeded, "manager1")
    path = f"/manager/tasks/{task.id}"
    response = client.post(path + "/result", data={
        "csrf_token": csrf_token(client, path), "result_code": codes(app, "回访成功"),
        "note": "客户满意"})
    assert response.status_code == 302 and response.location.endswith("/manager/")
    with session_for(app) as s:
        assert s.get(Task, task.id).status == "done"
        feedback = s.scalar(select(Feedback).where(Feedback.task_id == task.id))
        assert (feedback.channel, feedback.note) == ("web", "客户满意")
        assert s.scalar(select(AuditLog).where(AuditLog.object_type == "feedback")) is not None
    assert "结果已保存" in client.get("/manager/").get_data(as_text=True)
    # filed twice: refused, with the reason on the page
    again = client.post(path + "/result", data={
        "csrf_token": csrf_token(client, path), "result_code": codes(app, "回访成功")})
    assert again.status_code == 200 and "任务已关闭" in again.get_data(as_text=True)


def test_a_call_back_in_the_past_is_refused_and_one_ahead_is_booked(web):
    app, seeded = web
    task = tasks_of(app, "manager1")[0]
    client = client_for(app, seeded, "manager1")
    path = f"/manager/tasks/{task.id}"
    shanghai = dt.timezone(dt.timedelta(hours=8))
    past = (dt.datetime.now(shanghai) - dt.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M")
    response = client.post(path + "/result", data={
        "csrf_token": csrf_token(client, path), "result_code": codes(app, "预约再拨"),
        "appointment_at": past})
    assert response.status_code == 200 and "回电时间已过" in response.get_data(as_text=True)
    ahead = (dt.datetime.now(shanghai) + dt.timedelta(hours=2)).replace(second=0, microsecond=0)
    response = client.post(path + "/result", data={
        "csrf_token": csrf_token(client, path), "result_code": codes(app, "预约再拨"),
        "appointment_at": ahead.strftime("%Y-%m-%dT%H:%M")})
    assert response.status_code == 302
    with session_for(app) as s:
        booked = s.get(Task, task.id)
        assert booked.status == "pending"
        assert booked.appointment_at == ahead.astimezone(dt.timezone.utc).replace(tzinfo=None)
    html = client.get("/manager/?tab=callback").get_data(as_text=True)
    assert f'data-task="{task.id}"' in html


def test_reminders_and_overdue_flags_reach_manager_and_supervisor(web):
    app, seeded = web
    due, late, *_ = tasks_of(app, "manager1")
    set_task(app, due.id, appointment_at=utcnow() - dt.timedelta(minutes=1))
    set_task(app, late.id, appointment_at=utcnow() - dt.timedelta(hours=3))
    client = client_for(app, seeded, "manager1")
    answer = client.get("/manager/reminders").json
    assert [(d["id"], d["overdue"]) for d in answer["due"]] == [(late.id, True), (due.id, False)]
    html = client.get("/manager/?tab=callback").get_data(as_text=True)
    assert html.count("overdue") >= 1 and "已逾期" in html
    county = client_for(app, seeded, "supervisor").get("/county/").get_data(as_text=True)
    assert 'id="overdue"' in county and "张伟" in county.split('id="overdue"')[1]
    # manager2 has none
    assert client_for(app, seeded, "manager2").get("/manager/reminders").json["due"] == []


def test_next_task_for_progressive_dial(web):
    app, seeded = web
    first, second, *_ = tasks_of(app, "manager1")
    set_task(app, second.id, appointment_at=utcnow() - dt.timedelta(minutes=1))
    client = client_for(app, seeded, "manager1")
    answer = client.get("/manager/next").json
    assert answer["task"]["id"] == second.id
    assert answer["task"]["dial_url"] == f"/calls/dial/{second.id}"


def test_progressive_dial_stops_outside_the_calling_window(tmp_path):
    now = dt.datetime.now(dt.timezone(dt.timedelta(hours=8)))
    # a one-minute window two hours from now: closed now
    start = (now + dt.timedelta(hours=2)).strftime("%H:%M")
    end = (now + dt.timedelta(hours=2, minutes=1)).strftime("%H:%M")
    if start > end:  # around midnight: take a window earlier in the day
        start, end = "03:00", "03:01"
    app, seeded = make_app(tmp_path, {"calling_window": f"{start}-{end}"})
    answer = client_for(app, seeded, "manager1").get("/manager/next").json
    assert answer["task"] is None and answer["reason"] == "window"


def test_the_call_status_json_carries_a_live_label(web):
    app, seeded = web
    from khhf.models import Call
    task = tasks_of(app, "manager1")[0]
    with session_for(app) as s:
        call = Call(direction="outbound", task_id=task.id, customer_id=task.customer_id,
                    manager_id=task.manager_id, customer_number="13700000001",
                    state="manager_ringing")
        s.add(call)
        s.commit()
        call_id = call.id
    client = client_for(app, seeded, "manager1")
    answer = client.get(f"/calls/{call_id}").json
    assert (answer["progress"], answer["final"]) == ("座机振铃", False)
    with session_for(app) as s:
        s.get(Call, call_id).state, s.get(Call, call_id).outcome = "ended", "busy"
        s.commit()
    answer = client.get(f"/calls/{call_id}").json
    assert answer["final"] and answer["progress"] == "已结束：忙线"
    assert s.scalar(select(func.count()).select_from(Feedback)) == 0
