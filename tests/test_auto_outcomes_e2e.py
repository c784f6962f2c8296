"""Automatic outcomes (自动结果) end to end: the real Asterisk, the AMI bridge
and SIPp as desk phone and carrier. An unreached call (486 busy, ringing
out) is filed by the system with its mapped code the moment it ends,
retried by its rule (due again after the delay: 1 minute here, read from
the row rather than waited for) and closed with the closing code at the
limit; and in a real browser, progressive dial moves on to the next task
without asking for a result."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from khhf import bridge_client, db
from khhf.models import Feedback, Manager, ResultCode, Task, User, utcnow
from khhf.services import workspace
from khhf.services.dialing import request_call
from simkit import factories
from simkit.bridge_env import BridgeEnv
from simkit.browser import CHROMIUM, CHROMIUM_ARGS, csp_problems, log_in, serve

BUSY = {"CODE": 486, "REASON": "Busy Here"}
WAIT_MS = 30_000


@pytest.fixture(scope="module")
def env(pbx_harness, tmp_path_factory):
    env = BridgeEnv(pbx_harness, tmp_path_factory.mktemp("auto")).start()
    with db.unit_of_work(env.sessions) as s:
        factories.automatic_task_type(s, retry_minutes=1, max_retries=1)
    yield env
    env.stop()


def dial(env, ext, task_id) -> int:
    """Click-to-dial the task as the manager at `ext` (again, for a retry)."""
    with db.unit_of_work(env.sessions) as s:
        user = s.scalar(select(User).where(User.username == f"m{ext}"))
        call_id = request_call(s, env.settings, user, task_id,
                               live=bridge_client.live(env.settings)).id
    bridge_client.dial(env.settings, call_id)
    return call_id


def filed(env, task_id):
    """The task's (status, appointment) and its results as (channel, code)."""
    with env.sessions() as s:
        task = s.get(Task, task_id)
        rows = s.execute(select(Feedback.channel, ResultCode.code)
                         .join(ResultCode, ResultCode.id == Feedback.result_code_id)
                         .where(Feedback.task_id == task_id).order_by(Feedback.id)).all()
        return task.status, task.appointment_at, [tuple(r) for r in rows]


def test_a_busy_customer_is_filed_retried_by_the_rule_and_closed_at_the_limit(env, pbx_harness):
    desk = pbx_harness.desk_phone("8001", calls=2)
    carrier = pbx_harness.trunk("reject.xml", fill=BUSY, calls=2)
    task_id = env.task_for("8001", "13812347001", "auto")
    first = env.wait_final(dial(env, "8001", task_id))
    assert first.outcome == "busy"
    status, due, results = filed(env, task_id)
    # filed with the row: 7 忙线 by the system, due again a minute after the end
    assert (status, results) == ("pending", [("system", "7")])
    # a minute after the end; the end may move by the last leg's hang-up,
    # stored a batch later (sub-second), after the outcome was filed
    assert abs(due - (first.end_at + dt.timedelta(minutes=1))) < dt.timedelta(seconds=1)
    with env.sessions() as s:
        manager = s.scalar(select(Manager).where(Manager.desk_extension == "8001"))
        assert workspace.next_due(s, manager.id, now=due - dt.timedelta(seconds=1)) is None
        assert workspace.next_due(s, manager.id, now=due).id == task_id
    # the retry: busy again, and the rule's one retry is used, so 9 多次未接通 closes it
    second = env.wait_final(dial(env, "8001", task_id))
    assert second.outcome == "busy"
    assert filed(env, task_id) == ("done", None, [("system", "7"), ("system", "9")])
    assert carrier.wait(30) == 0 and desk.wait(30) == 0


def test_a_customer_who_does_not_answer_is_filed_and_retried(env, pbx_harness):
    desk = pbx_harness.desk_phone("8001")
    carrier = pbx_harness.trunk("ring_forever.xml")
    task_id = env.task_for("8001", "13812347002", "auto")
    call = env.wait_final(dial(env, "8001", task_id))
    assert call.outcome == "no_answer"
    status, due, results = filed(env, task_id)
    assert (status, results) == ("pending", [("system", "3")])  # 3 无人接听
    assert abs(due - (call.end_at + dt.timedelta(minutes=1))) < dt.timedelta(seconds=1)
    assert carrier.wait(30) == 0 and desk.wait(30) == 0


def test_progressive_dial_moves_on_without_asking_after_an_unreached_call(env, pbx_harness):
    from playwright.sync_api import sync_playwright

    tasks_ = [env.task_for("8002", phone, "auto") for phone in ("13812347011", "13812347012")]
    desk = pbx_harness.desk_phone("8002", calls=2)
    carrier = pbx_harness.trunk("reject.xml", fill=BUSY, calls=2)
    app, password = env.web_app("m8002")
    app.config.update(WORKSPACE_POLL_MS=200, WORKSPACE_AUTODIAL_SECONDS=2)
    with serve(app) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(locale="zh-CN")
        problems = csp_problems(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        log_in(page, base, "m8002", password)
        page.get_by_label("自动连拨").check()
        # the first customer is busy: the page says the system filed it and
        # counts down to the second without a result asked for
        page.wait_for_url(f"**/manager/tasks/{tasks_[0]}#call-*")
        page.wait_for_function("() => document.getElementById('ws-message')"
                               ".textContent.includes('系统已自动记录结果')")
        page.wait_for_url(f"**/manager/tasks/{tasks_[1]}#call-*")
        page.wait_for_function("() => document.getElementById('ws-message')"
                               ".textContent.includes('系统已自动记录结果')")
        # the first task's due again in a minute: nothing more is due now
        page.wait_for_function("() => document.getElementById('ws-message')"
                               ".textContent.includes('自动连拨已停止')")
        browser.close()
    assert not problems, problems
    for task_id in tasks_:
        assert filed(env, task_id)[0::2] == ("pending", [("system", "7")])
    assert carrier.wait(30) == 0 and desk.wait(30) == 0
    # the manager never filed: no result from the web
    with env.sessions() as s:
        assert not s.scalars(select(Feedback).where(Feedback.channel == "web")).all()
        assert all(s.get(Task, t).appointment_at > utcnow() - dt.timedelta(minutes=2)
                   for t in tasks_)
