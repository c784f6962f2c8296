"""Recording review in a real browser (Debian's chromium), on a recording
the real Asterisk made: a manager's click-to-dial through the AMI bridge,
SIPp as the desk phone and as the customer (with RTP), MixMonitor's WAV.
A supervisor finds it by part of the number, plays it and seeks (the audio
element reaches a later position; the server answered 206); the play is one
entry in the operation log. Another manager, and another county's
supervisor, cannot reach it by its id."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from sqlalchemy import select

from khhf import db
from khhf.models import AuditLog, Call, County, User
from khhf.services.accounts import hash_password
from simkit import factories
from simkit.bridge_env import BridgeEnv
from simkit.browser import CHROMIUM, CHROMIUM_ARGS, csp_problems, log_in, serve

WAIT_MS = 30_000
CUSTOMER = "13812347788"
PASSWORD = "recording-review-pw"


@pytest.fixture
def recorded(pbx_harness, tmp_path):
    """(bridge env, base URL, the recorded call) with the web UI served."""
    env = BridgeEnv(pbx_harness, tmp_path).start()
    try:
        with db.unit_of_work(env.sessions) as s:
            county = s.scalar(select(County))
            far = factories.county(s, "far", "远县", unified="13900000009")
            factories.user(s, "sup", "supervisor", county, display_name="赵县长")
            factories.user(s, "sup2", "supervisor", far, display_name="钱主任")
            for user in s.scalars(select(User)):
                user.password_hash = hash_password(PASSWORD)
        desk = pbx_harness.desk_phone("8001")
        customer = pbx_harness.trunk("answer_hangup.xml", duration_ms=6000)
        call_id = env.dial("8001", CUSTOMER)
        assert customer.wait(40) == 0 and desk.wait(40) == 0
        call = env.wait_final(call_id, recording=True)
        assert call.outcome == "answered" and call.recording_seconds > 4
        from webui import create_app
        with serve(create_app(env.settings)) as base:
            yield env, base, call
    finally:
        env.stop()


@pytest.fixture
def browser():
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


def _page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900}, locale="zh-CN")
    problems = csp_problems(context)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    return context, page, problems


def test_supervisor_finds_plays_and_seeks_a_real_recording(recorded, browser):
    env, base, call = recorded
    context, page, problems = _page(browser)
    audio_responses = []
    page.on("response", lambda r: audio_responses.append(
        (r.status, r.headers.get("content-range"), r.headers.get("content-type"),
         r.request.headers.get("range")))
        if "/audio" in r.url else None)
    log_in(page, base, "sup", PASSWORD)
    page.get_by_role("link", name="录音调听").click()
    page.get_by_label("客户号码").fill(CUSTOMER[-6:])
    page.get_by_label("方向").select_option(label="外呼")
    page.get_by_role("button", name="搜索").click()
    row = page.locator(f'#recordings tr[data-call="{call.id}"]')
    assert "138****7788" in row.inner_text() and CUSTOMER not in row.inner_text()
    shots = os.environ.get("KHHF_SCREENSHOTS_DIR")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(shots) / "recording-review.png"), full_page=True)
    row.get_by_role("link", name="调听").click()
    page.wait_for_url(f"{base}/recordings/{call.id}")
    assert page.inner_text("#customer-number") == CUSTOMER
    page.get_by_role("button", name="播放").click()
    # the element loads the recording and knows its length, then seeks
    page.wait_for_function("() => { const a = document.getElementById('recording-audio');"
                           " return a.readyState >= 1 && a.duration > 4; }")
    duration = page.evaluate("document.getElementById('recording-audio').duration")
    assert abs(duration - call.recording_seconds) < 0.5
    page.evaluate("""() => { const a = document.getElementById('recording-audio');
                             a.pause(); a.currentTime = a.duration - 1.5; }""")
    page.wait_for_function("() => { const a = document.getElementById('recording-audio');"
                           " return !a.seeking && a.currentTime >= a.duration - 1.6; }")
    position = page.evaluate("document.getElementById('recording-audio').currentTime")
    assert position >= duration - 1.6 and position > 2.5
    if shots:
        page.screenshot(path=str(Path(shots) / "recording-play.png"), full_page=True)
    # the browser asked by byte ranges and the server answered 206 with the
    # part it sent, as audio/wav
    partial = [r for r in audio_responses if r[0] == 206]
    assert partial, audio_responses
    assert all(r[1].startswith("bytes ") and r[1].endswith(f"/{call.recording_bytes}")
               and r[2] == "audio/wav" for r in partial), partial
    assert all(r[3] for r in partial)
    audio_url = page.evaluate("document.getElementById('recording-audio').src")
    context.close()
    assert not problems, problems
    # one play, one entry in the operation log, however many ranges were read
    with env.sessions() as s:
        entries = s.scalars(select(AuditLog).where(AuditLog.action == "play_recording",
                                                   AuditLog.object_id == str(call.id))).all()
        assert [(e.username, e.object_type) for e in entries] == [("sup", "call")]

    # another manager, and another county's supervisor: no such recording for them
    for username in ("m8002", "sup2"):
        context, page, problems = _page(browser)
        log_in(page, base, username, PASSWORD)
        assert page.goto(f"{base}/recordings/{call.id}").status == 404, username
        assert page.goto(audio_url).status == 404, username
        page.goto(f"{base}/recordings/?number={CUSTOMER}")
        assert page.locator(f'tr[data-call="{call.id}"]').count() == 0, username
        assert page.goto(f"{base}/recordings/{call.id}/play").status == 405
        context.close()
        assert not problems, problems
    # the manager who made the call hears it from the task's page
    context, page, problems = _page(browser)
    log_in(page, base, "m8001", PASSWORD)
    with env.sessions() as s:
        task_id = s.get(Call, call.id).task_id
    page.goto(f"{base}/manager/tasks/{task_id}")
    page.locator("#task-calls").get_by_role("link").first.click()
    page.wait_for_url(f"{base}/recordings/{call.id}")
    page.get_by_role("button", name="播放").click()
    page.wait_for_function("() => document.getElementById('recording-audio').readyState >= 1")
    context.close()
    assert not problems, problems
