"""The manager's workspace in a real browser (Debian's chromium), with the
real Asterisk, the AMI bridge and SIPp behind it: a manager dials and
watches the call's progress change on the page without a reload, files
the result, books a call-back and sees its reminder, and runs progressive
dial (自动连拨) through three customers. Without the phone system, on the
demo data: a search across the tabs, and the result form while a call is
on (the call row moved as the AMI bridge moves it)."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select

from khhf import db
from khhf.config import Settings
from khhf.models import Call, Feedback, Manager, Task, User, utcnow
from khhf.services import dialing, tasks
from simkit.bridge_env import BridgeEnv
from simkit.browser import CHROMIUM, CHROMIUM_ARGS, csp_problems, log_in, serve
from simkit.web import make_app, session_for

WAIT_MS = 30_000


@pytest.fixture
def served(pbx_harness, tmp_path):
    env = BridgeEnv(pbx_harness, tmp_path).start()
    app, password = env.web_app("m8001")
    # quicker page timers for the test; the defaults are 1 s, 5 s and 30 s
    app.config.update(WORKSPACE_POLL_MS=200, WORKSPACE_AUTODIAL_SECONDS=2,
                      WORKSPACE_REMINDER_SECONDS=1)
    with serve(app) as base:
        yield env, base, password
    env.stop()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
        problems = csp_problems(context)  # the page script must live within the CSP
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        yield page
        browser.close()
        assert not problems, problems


def wait_text(page, selector, text):
    page.wait_for_function(
        "([sel, text]) => (document.querySelector(sel)?.textContent || '').includes(text)",
        arg=[selector, text], timeout=WAIT_MS)


def file_result(page, label, note=""):
    page.select_option("#result_code", label=label)
    if note:
        page.fill("#note", note)
    page.get_by_role("button", name="保存结果").click()
    page.wait_for_load_state()


def test_dial_watch_live_and_file_the_result(served, pbx_harness, page):
    env, base, password = served
    task_id = env.task_for("8001", "13812340001")
    theirs = env.task_for("8002", "13812340002")
    desk = pbx_harness.desk_phone("8001", "answer_after.xml", fill={"RING_MS": 1500})
    customer = pbx_harness.trunk("answer_hangup_after.xml", duration_ms=2500,
                                 fill={"RING_MS": 800})
    log_in(page, base, "m8001", password)
    # another manager's task is not there for this one
    assert page.goto(f"{base}/manager/tasks/{theirs}").status == 404
    page.goto(f"{base}/manager/tasks/{task_id}")
    assert "138****0001" in page.content() and "13812340001" not in page.content()
    page.evaluate("window.notReloaded = true")
    page.get_by_role("button", name="呼叫").click()
    # the label follows the call row as the bridge writes it, on the same page
    wait_text(page, "#call-state", "座机振铃")
    wait_text(page, "#call-state", "通话中")
    wait_text(page, "#call-state", "已结束")
    assert "已接听" in page.inner_text("#call-state")
    assert page.evaluate("window.notReloaded") is True
    assert customer.wait(30) == 0 and desk.wait(30) == 0
    with env.sessions() as s:
        call_id = s.scalar(select(Call.id).where(Call.task_id == task_id))
    assert env.wait_final(call_id).outcome == "answered"
    file_result(page, "1 回访成功", note="满意")
    assert page.url == f"{base}/manager/"
    assert "结果已保存" in page.content()
    with env.sessions() as s:
        assert s.get(Task, task_id).status == "done"
        feedback = s.scalar(select(Feedback).where(Feedback.task_id == task_id))
        assert (feedback.call_id, feedback.note, feedback.channel) == (call_id, "满意", "web")
    page.goto(f"{base}/manager/?tab=done")
    assert page.locator(f"tr[data-task='{task_id}']").count() == 1


def test_book_a_call_back_and_see_its_reminder(served, page):
    env, base, password = served
    task_id = env.task_for("8001", "13812340003")
    log_in(page, base, "m8001", password)
    page.goto(f"{base}/manager/tasks/{task_id}")
    shanghai = dt.timezone(dt.timedelta(hours=8))
    tomorrow = (dt.datetime.now(shanghai) + dt.timedelta(days=1)).replace(
        hour=10, minute=0, second=0, microsecond=0)
    page.select_option("#result_code", label="6 预约再拨")
    page.fill("#appointment_at", tomorrow.strftime("%Y-%m-%dT%H:%M"))
    page.get_by_role("button", name="保存结果").click()
    page.wait_for_load_state()
    with env.sessions() as s:
        task = s.get(Task, task_id)
        assert (task.status, task.appointment_at) == (
            "pending", tomorrow.astimezone(dt.timezone.utc).replace(tzinfo=None))
    page.goto(f"{base}/manager/?tab=callback")
    assert page.locator(f"tr[data-task='{task_id}']").count() == 1
    assert page.locator("#reminders").is_hidden()
    # the time comes (set in the database: waiting a minute is no test)
    with db.unit_of_work(env.sessions) as s:
        s.get(Task, task_id).appointment_at = utcnow() - dt.timedelta(seconds=5)
    wait_text(page, "#reminders", "预约回电时间到")
    assert "客户" in page.inner_text("#reminders")
    # and much later it is overdue, for the manager and their supervisor
    with db.unit_of_work(env.sessions) as s:
        s.get(Task, task_id).appointment_at = utcnow() - dt.timedelta(hours=2)
    wait_text(page, "#reminders", "已逾期")
    page.locator(f"#reminders [data-task='{task_id}'] a").click()
    page.wait_for_load_state()
    assert page.url.endswith(f"/manager/tasks/{task_id}")
    assert "已逾期" in page.inner_text("#task-facts")


def test_progressive_dial_through_three_customers(served, pbx_harness, page):
    env, base, password = served
    phones = ["13812340011", "13812340012", "13812340013"]
    task_ids = [env.task_for("8001", phone) for phone in phones]
    desk = pbx_harness.desk_phone("8001", "answer.xml", calls=3)
    customer = pbx_harness.trunk("answer_hangup.xml", duration_ms=1200, calls=3)
    log_in(page, base, "m8001", password)
    page.get_by_label("自动连拨").check()
    dialed = []
    for _ in range(3):
        # the countdown names the next customer; then the page goes to the call
        page.wait_for_url("**/manager/tasks/*", timeout=WAIT_MS)
        dialed.append(int(page.url.split("/manager/tasks/")[1].split("#")[0]))
        wait_text(page, "#call-state", "已结束")
        assert page.input_value("input[name=autodial]") == "1"
        file_result(page, "1 回访成功")
    wait_text(page, "#ws-message", "自动连拨已停止")
    assert not page.get_by_label("自动连拨").is_checked()
    assert dialed == task_ids  # oldest first
    assert customer.wait(30) == 0 and desk.wait(30) == 0
    with env.sessions() as s:
        calls = s.scalars(select(Call).where(Call.task_id.in_(task_ids))).all()
        assert len(calls) == 3
        assert {s.get(Task, t).status for t in task_ids} == {"done"}
        assert s.scalar(select(func.count()).select_from(Feedback)
                        .where(Feedback.task_id.in_(task_ids))) == 3
    for call in calls:
        assert env.wait_final(call.id).outcome == "answered"


def test_cancelling_the_pause_dials_nothing(served, page):
    env, base, password = served
    task_id = env.task_for("8001", "13812340021")
    log_in(page, base, "m8001", password)
    page.get_by_label("自动连拨").check()
    wait_text(page, "#autodial-text", "即将呼叫")
    page.get_by_role("button", name="取消").click()
    assert page.locator("#autodial-status").is_hidden()
    page.wait_for_timeout(3000)  # longer than the pause: still nothing rang
    assert page.url == f"{base}/manager/"
    with env.sessions() as s:
        assert s.scalar(select(Call).where(Call.task_id == task_id)) is None


# -- without the phone system: the demo data, and call rows as the bridge writes them --
@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    app, seeded = make_app(tmp_path_factory.mktemp("workspace"), {"calling_window": "00:00-24:00"})
    app.config.update(WORKSPACE_POLL_MS=200)
    with serve(app) as base:
        yield app, base, seeded


def call_moves(app, call_id, state, outcome=None):
    """The call row goes to `state`, and its task follows, as the AMI bridge does it."""
    with session_for(app) as s:
        call = s.get(Call, call_id)
        call.state, call.outcome = state, outcome
        tasks.follow_call(s, s.get(Task, call.task_id), call)
        s.commit()


def live_call_for(app, username, device="desk"):
    """(task id, call id) of a call just placed for one of the user's pending tasks."""
    with session_for(app) as s:
        manager = s.scalar(select(Manager).join(User).where(User.username == username))
        task = s.scalars(select(Task).where(Task.manager_id == manager.id,
                                            Task.status == "pending")
                         .order_by(Task.id.desc())).first()
        call = dialing.request_call(s, Settings(calling_window="00:00-24:00"), manager.user,
                                    task.id, device=device)
        s.commit()
        return task.id, call.id


def test_a_search_finds_tasks_in_any_tab_and_the_tabs_count_the_matches(demo, page):
    _, base, seeded = demo
    log_in(page, base, "manager1", seeded["passwords"]["manager1"])
    page.goto(f"{base}/manager/?tab=done")
    page.get_by_label("搜索").fill("0001")
    page.get_by_role("button", name="搜索").click()
    page.wait_for_load_state()
    # the match is a task not called yet: its tab is shown, and every count is of matches
    assert page.locator("#tabs .active").get_attribute("data-tab") == "todo"
    counts = {a.get_attribute("data-tab"): int(a.locator(".badge").inner_text())
              for a in page.locator("#tabs a").all()}
    assert counts == {"todo": 1, "callback": 0, "connected": 0, "not_reached": 0, "done": 0}
    assert page.locator("#tasks tbody tr[data-task]").count() == 1
    assert "137****0001" in page.inner_text("#tasks")
    assert "0001" in page.inner_text("#search-note")
    # another tab keeps the search, and is shown as picked
    page.locator("#tabs a[data-tab='done']").click()
    page.wait_for_load_state()
    assert page.locator("#tabs .active").get_attribute("data-tab") == "done"
    assert page.get_by_label("搜索").input_value() == "0001"
    assert "这里没有任务" in page.inner_text("#tasks")


def test_the_result_form_chooses_nothing_and_says_when_the_call_is_on(demo, page):
    app, base, seeded = demo
    task_id, call_id = live_call_for(app, "manager1")
    call_moves(app, call_id, "connected")
    log_in(page, base, "manager1", seeded["passwords"]["manager1"])
    page.goto(f"{base}/manager/tasks/{task_id}")
    # no result is chosen for the manager
    assert page.locator("#result_code").input_value() == ""
    assert page.locator("#result_code option:checked").inner_text() == "—— 请选择结果 ——"
    page.get_by_role("button", name="保存结果").click()
    page.wait_for_load_state()
    assert "请选择本任务类型的一个结果" in page.inner_text("#result-form")
    # the call is on: the form says so, and a result needs the box ticked
    assert page.locator("#live-call").is_visible()
    assert "通话仍在进行中" in page.inner_text("#live-call")
    page.select_option("#result_code", label="1 回访成功")
    page.get_by_role("button", name="保存结果").click()
    page.wait_for_load_state()
    assert "通话仍在进行中：请在通话结束后保存结果" in page.inner_text("#live-call")
    with session_for(app) as s:
        assert s.scalar(select(Feedback).where(Feedback.task_id == task_id)) is None
    # the call ends while the page is open: the warning goes without a reload
    page.goto(f"{base}/manager/tasks/{task_id}")
    assert page.locator("#live-call").is_visible()
    call_moves(app, call_id, "ended", "answered")
    page.locator("#live-call").wait_for(state="hidden")
    page.select_option("#result_code", label="1 回访成功")
    page.get_by_role("button", name="保存结果").click()
    page.wait_for_load_state()
    assert "结果已保存" in page.content()


def test_a_result_during_the_call_is_saved_once_confirmed(demo, page):
    app, base, seeded = demo
    task_id, call_id = live_call_for(app, "manager1")
    call_moves(app, call_id, "connected")
    log_in(page, base, "manager1", seeded["passwords"]["manager1"])
    page.goto(f"{base}/manager/tasks/{task_id}")
    page.select_option("#result_code", label="1 回访成功")
    page.get_by_label("通话未结束，仍然保存").check()
    page.get_by_role("button", name="保存结果").click()
    page.wait_for_load_state()
    assert "结果已保存" in page.content()
    with session_for(app) as s:
        assert s.scalar(select(Feedback.call_id).where(Feedback.task_id == task_id)) == call_id
    call_moves(app, call_id, "ended", "answered")
