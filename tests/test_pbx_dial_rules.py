"""The dialing rules end to end, through the web UI's 呼叫, a real Asterisk
and SIPp: a customer called 3 times in 5 minutes is refused a 4th with the
Chinese message saying when, and a number on the do-not-call list is
refused before any INVITE reaches the carrier trunk."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from khhf import db
from khhf.calls.states import CallOutcome, CallState
from khhf.models import Call, DncChannel, Task, utcnow
from khhf.services import dnc
from simkit.bridge_env import UNIFIED, BridgeEnv
from simkit.browser import CHROMIUM, CHROMIUM_ARGS, csp_problems, log_in, serve
from simkit.web import log_in_as

CUSTOMER = "13812346001"
LISTED = "13812346002"


@pytest.fixture
def env(pbx_harness, tmp_path):
    env = BridgeEnv(pbx_harness, tmp_path).start()
    yield env
    env.stop()


def dial(client, task_id):
    return client.post(f"/calls/dial/{task_id}", headers={"Accept": "application/json"})


def test_a_fourth_call_in_five_minutes_and_a_listed_number_never_ring(env, pbx_harness):
    assert env.settings.customer_calls_per_5min == 3   # the default rule
    app, _ = env.web_app("m8001")
    app.config["WTF_CSRF_ENABLED"] = False
    client = app.test_client()
    log_in_as(client, app, "m8001")
    desk = pbx_harness.desk_phone("8001", "answer.xml", calls=3)
    # the customer's phone is busy: each call reaches the customer, and counts
    trunk = pbx_harness.trunk("reject.xml", calls=3, fill={"CODE": 486, "REASON": "Busy Here"})
    for _ in range(3):
        answer = dial(client, env.task_for("8001", CUSTOMER))
        assert answer.status_code == 200, answer.json
        assert env.wait_final(answer.json["call_id"]).outcome == "busy"
    refused = dial(client, env.task_for("8001", CUSTOMER))
    assert refused.status_code == 409 and refused.json["next"] is True
    assert "该客户最近5分钟内已被呼叫3次（最多3次）" in refused.json["message"]
    assert "之后可以再呼叫" in refused.json["message"]
    assert trunk.wait(30) == 0 and desk.wait(30) == 0
    assert len(trunk.received("INVITE")) == 3

    with db.unit_of_work(env.sessions) as s:
        dnc.add(s, None, "", LISTED, channel=DncChannel.IMPORT, source="12321",
                reason="投诉骚扰")
    carrier = pbx_harness.trunk("answer_hangup.xml", duration_ms=500)
    task_id = env.task_for("8001", LISTED)
    refused = dial(client, task_id)
    assert refused.status_code == 409 and "免打扰名单" in refused.json["message"]
    carrier.stop()
    assert carrier.received("INVITE") == []
    with env.sessions() as s:   # refused before anything was written
        assert s.scalar(select(Call).where(Call.task_id == task_id)) is None
        assert len(s.scalars(select(Call).where(Call.customer_number == CUSTOMER)).all()) == 3


def test_progressive_dial_skips_a_customer_called_too_often_and_leaves_the_task_open(
        env, pbx_harness):
    """The next task is the oldest whose customer may be called now: a
    customer with 3 calls in the last minutes is passed over (the task
    stays pending, to come back later), in a real browser, CSP clean."""
    from playwright.sync_api import sync_playwright
    busy_task = env.task_for("8001", CUSTOMER)
    free_task = env.task_for("8001", "13812346003")
    with db.unit_of_work(env.sessions) as s:   # 3 calls, as the bridge leaves them
        task = s.get(Task, busy_task)
        for minutes in (3, 2, 1):
            at = utcnow() - dt.timedelta(minutes=minutes)
            s.add(Call(direction="outbound", task_id=None, customer_id=task.customer_id,
                       manager_id=task.manager_id, county_id=task.customer.county_id,
                       customer_number=CUSTOMER, unified_number=UNIFIED,
                       state=CallState.ENDED, outcome=CallOutcome.NO_ANSWER,
                       requested_at=at, end_at=at))
    app, password = env.web_app("m8001")
    app.config.update(WORKSPACE_POLL_MS=200, WORKSPACE_AUTODIAL_SECONDS=1)
    desk = pbx_harness.desk_phone("8001", "answer.xml", calls=1)
    carrier = pbx_harness.trunk("answer_hangup.xml", duration_ms=800, calls=1)
    with serve(app) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(locale="zh-CN")
        problems = csp_problems(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        log_in(page, base, "m8001", password)
        page.get_by_label("自动连拨").check()
        page.wait_for_url(f"**/manager/tasks/{free_task}#call-*")
        assert carrier.wait(30) == 0 and desk.wait(30) == 0
        browser.close()
    assert not problems, problems
    [invite] = carrier.received("INVITE")
    assert invite.first_line.startswith("INVITE sip:13812346003@")
    with env.sessions() as s:
        assert s.get(Task, busy_task).status == "pending"
        assert s.scalar(select(Call).where(Call.task_id == busy_task)) is None
