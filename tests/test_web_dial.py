"""One-click dial from the web page, end to end: a manager logs in in a real
browser (Debian's chromium), clicks 呼叫 on a task; the AMI bridge
originates; the SIPp desk phone rings and answers; the SIPp carrier gets
the call from the unified number; the page then shows the call's outcome."""

import time

import pytest
from sqlalchemy import select

from khhf.models import Call, Task
from simkit.bridge_env import UNIFIED, BridgeEnv
from simkit.browser import CHROMIUM, CHROMIUM_ARGS, log_in, serve
from simkit.web import log_in_as

CUSTOMER = "13812347777"


@pytest.fixture
def served(pbx_harness, tmp_path):
    env = BridgeEnv(pbx_harness, tmp_path).start()
    app, password = env.web_app("m8001")
    with serve(app) as base:
        yield env, base, password
    env.stop()


def test_manager_clicks_call_and_reaches_the_customer(served, pbx_harness):
    from playwright.sync_api import sync_playwright
    env, base, password = served
    task_id = env.task_for("8001", CUSTOMER)
    desk = pbx_harness.desk_phone("8001")
    customer = pbx_harness.trunk("answer_hangup.xml", duration_ms=1500)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(locale="zh-CN")
        log_in(page, base, "m8001", password)
        row = page.locator(f"tr[data-task='{task_id}']")
        assert "138****7777" in row.inner_text() and CUSTOMER not in page.content()
        row.get_by_role("button", name="呼叫").click()
        # the page script places the call and opens the task's page, which follows it
        page.wait_for_url(f"**/manager/tasks/{task_id}#call-*")
        assert customer.wait(30) == 0 and desk.wait(30) == 0
        with env.sessions() as s:
            call_id = s.scalar(select(Call.id).where(Call.task_id == task_id))
        call = env.wait_final(call_id)
        assert (call.outcome, call.hangup_by) == ("answered", "customer")
        [invite] = customer.received("INVITE")
        assert f"sip:{UNIFIED}@" in invite.header("From")
        # the home page now lists the call with its outcome, and the task as connected
        time.sleep(0.2)
        page.goto(f"{page.url.split('/manager/')[0]}/manager/?tab=connected")
        assert "已接听" in page.locator("#calls").inner_text()
        assert "已接通" in page.locator(f"tr[data-task='{task_id}']").inner_text()
        browser.close()


def test_when_the_bridge_is_down_nothing_rings_and_the_task_is_free(served):
    env, _, _ = served
    env.stop()  # the AMI bridge (and its command channel) is gone
    app, _ = env.web_app("m8001")
    task_id = env.task_for("8001", "13812348888")
    client = app.test_client()
    log_in_as(client, app, "m8001")
    app.config["WTF_CSRF_ENABLED"] = False
    response = client.post(f"/calls/dial/{task_id}", headers={"Accept": "application/json"})
    assert response.status_code == 503 and response.json["ok"] is False
    with env.sessions() as s:
        # the PBX could not be asked whether the manager is busy: nothing is written
        assert s.scalar(select(Call).where(Call.task_id == task_id)) is None
        assert s.get(Task, task_id).status == "pending"
