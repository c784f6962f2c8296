"""The supervisor's live view (实时监控) in a real browser (Debian's
chromium), with the real Asterisk, the AMI bridge and SIPp behind it: a
live call appears on the page and goes when SIPp hangs up, with no reload;
a silent listen and a whisper ring the supervisor's SIPp desk phone, which
then receives the call's audio (RTP, checked packet by packet); and every
refusal (another county, a manager, no call) is explained and audited."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from khhf import db
from khhf.models import AuditLog, Call, County, Manager, utcnow
from simkit import factories
from simkit.bridge_env import BridgeEnv
from simkit.browser import CHROMIUM, CHROMIUM_ARGS, csp_problems, log_in, serve
from simkit.rtp import RtpSink
from simkit.web import csrf_token, log_in_as

WAIT_MS = 30_000
CUSTOMER = "13812345678"
SUPERVISOR_DESK = "8003"   # the harness's third phone: the supervisor's here


def arrange(env) -> dict:
    """The supervisor 'sup' of county demo with desk phone 8003 (taken from
    manager 8003), manager 8001 on duty, and a second county with its own
    supervisor 'sup2' and manager."""
    with db.unit_of_work(env.sessions) as s:
        county = s.scalar(select(County).where(County.code == "demo"))
        s.scalar(select(Manager).where(Manager.desk_extension == SUPERVISOR_DESK)) \
            .desk_extension = None
        s.flush()
        sup = factories.user(s, "sup", "supervisor", county, display_name="赵主管")
        sup.desk_extension = SUPERVISOR_DESK
        other = factories.county(s, "other", "邻县", unified="13900000009")
        factories.user(s, "sup2", "supervisor", other, display_name="钱主管")
        factories.manager(s, other, "m9001", desk="9001", display_name="孙经理")
        m8001 = s.scalar(select(Manager).where(Manager.desk_extension == "8001"))
        m8001.on_duty = True
        # a hotline call nobody answered this morning (khhf.services.hotline writes these)
        s.add(Call(direction="inbound", county_id=county.id, manager_id=m8001.id,
                   customer_number="13911112222", state="ended", outcome="missed",
                   requested_at=utcnow(), end_at=utcnow()))
        return {"m8001": m8001.id}


@pytest.fixture
def served(pbx_harness, tmp_path):
    env = BridgeEnv(pbx_harness, tmp_path).start()
    ids = arrange(env)
    app, password = env.web_app("sup")
    app.config.update(LIVE_POLL_MS=200)  # the default is 2 s
    with serve(app) as base:
        yield env, app, base, password, ids
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


def cells(page, row) -> list[str]:
    return [t.strip() for t in page.locator(f"{row} td").all_inner_texts()]


def screenshots_dir(tmp_path) -> Path:
    """Where screenshots go: docs/screenshots under scripts/screenshots."""
    out = Path(os.environ.get("KHHF_SCREENSHOTS_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


def audit_entries(env, action: str) -> list[AuditLog]:
    with env.sessions() as s:
        return s.scalars(select(AuditLog).where(AuditLog.action == action)
                         .order_by(AuditLog.id)).all()


def spy_channels(harness) -> dict[str, tuple[str, str]]:
    """{channel: (application, its data)} of the PBX's channels, from the AMI."""
    async def ask():
        client = harness.ami(event_mask="off")
        await client.connect()
        try:
            answer = await client.action({"Action": "CoreShowChannels"}, timeout=5)
        finally:
            client.close()
        return {m.get("Channel"): (m.get("Application"), m.get("ApplicationData"))
                for m in answer if m.get("Event") == "CoreShowChannel"}
    # in a thread of its own: Playwright's sync API keeps an event loop in this one
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, ask()).result(30)


def test_a_live_call_appears_and_goes_without_reload(served, pbx_harness, page):
    env, app, base, password, ids = served
    desk = pbx_harness.desk_phone("8001")
    customer = pbx_harness.trunk("answer_hangup.xml", duration_ms=5000)
    log_in(page, base, "sup", password)
    page.get_by_role("link", name="实时监控").click()
    assert page.url == f"{base}/live/"
    page.evaluate("window.notReloaded = true")
    row = f"#live-managers tr[data-manager='{ids['m8001']}']"
    page.wait_for_selector(f"{row}[data-activity='idle']")
    assert cells(page, row)[:4] == ["经理8001", "8001", "在岗", "空闲"]
    # another county's manager is not on this supervisor's page
    assert "孙经理" not in page.inner_text("#live-managers")
    # the hotline's missed call, masked, with today's count
    assert cells(page, "#live-missed tbody tr")[1:] == ["139****2222", "经理8001"]
    assert page.inner_text("#live-missed-count") == "1"

    call_id = env.dial("8001", CUSTOMER)
    page.wait_for_selector(f"{row}[data-activity='on_call']")
    wait_text(page, row, "138****5678")
    shown = cells(page, row)
    assert shown[3] == "通话中" and re.fullmatch(r"\d\d:\d\d:\d\d", shown[4]), shown
    assert shown[6] == "外呼", shown
    assert CUSTOMER not in page.content()
    # SIPp hangs up: the line goes back to idle, and today's figures count the
    # call (beside this morning's missed hotline call: 2 calls, 1 connected)
    assert customer.wait(30) == 0 and desk.wait(30) == 0
    assert env.wait_final(call_id).outcome == "answered"
    page.wait_for_selector(f"{row}[data-activity='idle']")
    page.wait_for_function(
        "sel => [...document.querySelectorAll(sel + ' td')].slice(8, 10)"
        ".map(td => td.textContent).join(',') === '2,1'", arg=row, timeout=WAIT_MS)
    assert page.evaluate("window.notReloaded") is True


@pytest.mark.parametrize("mode, button, options", [
    ("listen", "静默监听", "qES"),
    ("whisper", "耳语", "qESw"),
])
def test_listen_rings_the_supervisors_phone_which_hears_the_call(
        served, pbx_harness, page, tmp_path, mode, button, options):
    env, app, base, password, ids = served
    sink = RtpSink()
    try:
        supervisor_phone = pbx_harness.desk_phone(SUPERVISOR_DESK, "listen_phone.xml",
                                                  keys={"rtp_port": sink.port})
        desk = pbx_harness.desk_phone("8001")
        customer = pbx_harness.trunk("answer_hangup.xml", duration_ms=10000)
        log_in(page, base, "sup", password)
        page.goto(f"{base}/live/")
        row = f"#live-managers tr[data-manager='{ids['m8001']}']"
        call_id = env.dial("8001", CUSTOMER)
        env.wait_state(call_id, "connected")
        page.locator(row).get_by_role("button", name=button, exact=True).click()
        wait_text(page, "#live-message", "正在振铃")
        if mode == "listen":  # scripts/screenshots keeps it for the README
            page.screenshot(path=str(screenshots_dir(tmp_path) / "live-view.png"),
                            full_page=True)
        # the supervisor's phone was rung by the PBX, answered, and hears the call
        sink.wait_audible(50)  # a second of sound, packet by packet
        invite = supervisor_phone.received("INVITE")
        assert len(invite) == 1 and invite[0].header("To").startswith(
            f"<sip:{SUPERVISOR_DESK}@"), supervisor_phone.trace_summary()
        spies = {name: data for name, (app_name, data) in spy_channels(pbx_harness).items()
                 if app_name == "ChanSpy"}
        assert list(spies.values()) == [f"PJSIP/8001-,{options}"], spies
        assert next(iter(spies)).startswith(f"PJSIP/{SUPERVISOR_DESK}-")
        # the call ends: ChanSpy ends with it and the PBX hangs up the supervisor
        assert customer.wait(30) == 0 and desk.wait(30) == 0
        assert supervisor_phone.wait(30) == 0, supervisor_phone.trace_summary()
        assert supervisor_phone.received("BYE")
    finally:
        sink.close()
    entries = audit_entries(env, "listen")
    assert [(e.username, e.object_type, e.object_id, e.object_name) for e in entries] == [
        ("sup", "manager", str(ids["m8001"]), "经理8001")]
    assert json.loads(entries[0].detail) == {"mode": mode, "desk": SUPERVISOR_DESK}
    page.goto(f"{base}/live/")  # a supervisor cannot open the log; the text renders there
    assert page.locator("#live-managers").count() == 1


def _post_listen(app, username: str, manager_id: int, mode: str = "listen"):
    client = app.test_client()
    log_in_as(client, app, username)
    token = csrf_token(client, "/customers/")
    return client.post(f"/live/listen/{manager_id}", data={"mode": mode},
                       headers={"Accept": "application/json", "X-CSRFToken": token})


def test_refusals_are_explained_and_audited(served, pbx_harness):
    env, app, base, password, ids = served
    m8001 = ids["m8001"]
    # no call in progress on the manager's desk phone (the PBX says so)
    answer = _post_listen(app, "sup", m8001)
    assert answer.status_code == 409
    assert answer.get_json()["message"] == "经理8001 现在没有座机通话：请在页面显示其通话中时再监听。"
    # another county's supervisor, a manager: refused whatever the call
    answer = _post_listen(app, "sup2", m8001)
    assert (answer.status_code, answer.get_json()["message"]) == (
        409, "您只能监听本县客户经理的通话。")
    answer = _post_listen(app, "m8002", m8001)
    assert (answer.status_code, answer.get_json()["message"]) == (
        409, "只有县级主管可以监听客户经理的通话。")
    refused = audit_entries(env, "listen_refused")
    assert [(e.username, e.object_id, json.loads(e.detail)["reason"]) for e in refused] == [
        ("sup", str(m8001), "no_call"), ("sup2", str(m8001), "other_county"),
        ("m8002", str(m8001), "not_supervisor")]
    assert audit_entries(env, "listen") == []
    # the manager has no live view; the other county's supervisor sees only theirs
    client = app.test_client()
    log_in_as(client, app, "m8002")
    assert client.get("/live/").status_code == 403
    assert client.get("/live/state").status_code == 403
    client = app.test_client()
    log_in_as(client, app, "sup2")
    names = [m["name"] for m in client.get("/live/state").get_json()["managers"]]
    assert names == ["孙经理"]
    # the log says each refusal in words (an administrator reads it)
    with db.unit_of_work(env.sessions) as s:
        factories.user(s, "root", "admin", None, display_name="管理员")
    client = app.test_client()
    log_in_as(client, app, "root")
    log = client.get("/audit/").get_data(as_text=True)
    assert "监听客户经理 经理8001的通话被拒绝：客户经理当时没有座机通话" in log, log


@pytest.fixture
def hotline_served(tmp_path):
    """A PBX of its own whose hotline asks a FastAGI service on the bridge's
    database (the session's PBX has no AGI), short ring times, and the page."""
    from khhf.config import agi_key
    from simkit.harness import AgiThread, PbxHarness
    harness = PbxHarness(tmp_path / "pbx", name=f"livehl{os.getpid()}")
    harness.settings.hotline_group_ring_seconds = 4
    env = BridgeEnv(harness, tmp_path)
    ids = arrange(env)
    agi = AgiThread(env.sessions, key=agi_key(harness.settings)).start()
    harness.settings.agi_port = agi.port  # rendered into KHHF_AGI at up()
    try:
        with harness:
            env.start()
            app, password = env.web_app("sup")
            app.config.update(LIVE_POLL_MS=200)
            with serve(app) as base:
                yield harness, env, base, password, ids
            env.stop()
    finally:
        agi.stop()


def test_the_hotline_ringing_then_missed(hotline_served, page):
    from simkit.harness import free_port
    harness, env, base, password, ids = hotline_served
    harness.desk_phone("8001", "ring_forever.xml")   # on duty: the group rings it
    log_in(page, base, "sup", password)
    page.goto(f"{base}/live/")
    page.evaluate("window.notReloaded = true")
    page.wait_for_selector("#live-missed tbody tr")
    assert page.inner_text("#live-missed-count") == "1"   # this morning's (arrange)
    caller = harness.party("hotline_call.xml", local_ip=harness.settings.trunk_host,
                           port=free_port(harness.settings.trunk_host),
                           remote=harness.sip_target, service="13900000000",
                           keys={"caller": "13955556666"}).start()
    # ringing: on the hotline list, and on the desk phone's line
    wait_text(page, "#live-ringing", "139****6666")
    page.wait_for_selector(f"#live-managers tr[data-manager='{ids['m8001']}']"
                           "[data-activity='ringing']")
    # nobody answers: the caller hears the message, the call is missed
    assert caller.wait(60) == 0, caller.trace_summary()
    wait_text(page, "#live-missed", "139****6666")
    wait_text(page, "#live-missed-count", "2")
    assert page.locator("#live-ringing tbody tr").count() == 0
    assert page.evaluate("window.notReloaded") is True
