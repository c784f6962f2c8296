"""The manager's phone pages (/m/) in a real browser with a phone's viewport
(Debian's chromium: 375×812, touch, mobile), with the real Asterisk, the AMI
bridge and SIPp behind them: a manager away from the desk logs in, taps a
task, taps 呼叫 with 我的手机 chosen, follows the two-leg call (双呼) live
and files the result. And at 375 px nothing wraps a Chinese word over two
lines and every tap target is at least 44 px. Without the phone system, on
the demo data: due call-backs on /m/, and a call's live state on the task's
page (the call row moved as the AMI bridge moves it).

Screenshots at phone size go to tmp_path, or to $KHHF_SCREENSHOTS_DIR when
it is set (scripts/screenshots sets it to docs/screenshots)."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import select

from khhf import db
from khhf.config import Settings
from khhf.models import Call, Feedback, Manager, Task, User, utcnow
from khhf.services import dialing, tasks
from simkit.bridge_env import UNIFIED, BridgeEnv
from simkit.browser import CHROMIUM, CHROMIUM_ARGS, csp_problems, require_chromium, serve
from simkit.web import make_app, session_for

require_chromium()

WAIT_MS = 30_000
CUSTOMER = "13812346001"
MOBILE = "13700008001"      # manager m8001's mobile (simkit.bridge_env)
PHONE = dict(viewport={"width": 375, "height": 812}, device_scale_factor=2, is_mobile=True,
             has_touch=True, locale="zh-CN")


def screenshots_dir(tmp_path) -> Path:
    out = Path(os.environ.get("KHHF_SCREENSHOTS_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.fixture
def phone():
    """A phone-sized page; the test fails if any page broke the CSP."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(**PHONE)
        problems = csp_problems(context)
        page = context.new_page()
        page.set_default_timeout(WAIT_MS)
        yield page
        browser.close()
        assert not problems, problems


def phone_log_in(page, base, username, password):
    page.goto(f"{base}/m/login")
    page.get_by_label("用户名").fill(username)
    page.get_by_label("密码").fill(password)
    with page.expect_navigation():
        page.get_by_role("button", name="登录").tap()


def wait_text(page, selector, text):
    page.wait_for_function(
        "([sel, text]) => (document.querySelector(sel)?.textContent || '').includes(text)",
        arg=[selector, text], timeout=WAIT_MS)


# -- log-in -> tasks -> tap-to-call (two-leg) -> live state -> result -------------------
@pytest.fixture
def served(pbx_harness, tmp_path):
    env = BridgeEnv(pbx_harness, tmp_path).start()
    app, password = env.web_app("m8001")
    app.config.update(WORKSPACE_POLL_MS=200)
    with serve(app) as base:
        yield env, base, password
    env.stop()


def test_manager_calls_from_the_phone_through_their_mobile(served, pbx_harness, phone,
                                                           tmp_path):
    env, base, password = served
    out = screenshots_dir(tmp_path)
    task_id = env.task_for("8001", CUSTOMER)
    with db.unit_of_work(env.sessions) as s:
        s.get(Task, task_id).task_type.script = "您好，我是客户经理{经理}，想了解您对服务的意见。"
    carrier = pbx_harness.trunk("two_leg.xml", calls=2, duration_ms=2500,
                                fill={"MOBILE": MOBILE})
    page = phone
    page.goto(f"{base}/m/login")
    assert page.get_by_label("在这部手机上保持登录到今天结束").is_checked()
    page.screenshot(path=str(out / "mobile-login.png"))
    phone_log_in(page, base, "m8001", password)
    assert page.url.startswith(f"{base}/m/")

    # kept logged in on this phone until the end of the (local) day
    [cookie] = [c for c in page.context.cookies() if c["name"] == "session"]
    zone = ZoneInfo(env.settings.timezone)
    midnight = dt.datetime.combine(dt.datetime.now(zone).date() + dt.timedelta(days=1),
                                   dt.time(), zone)
    assert cookie["expires"] >= min(midnight.timestamp(),
                                    dt.datetime.now().timestamp() + 8 * 3600) - 5
    assert cookie["httpOnly"]

    # today's tasks as cards; the customer's number masked
    card = page.locator(f"a.card[data-task='{task_id}']")
    assert "138****6001" in card.inner_text() and CUSTOMER not in page.content()
    card.tap()
    page.wait_for_url(f"**/m/tasks/{task_id}")
    assert "我是客户经理经理8001" in page.locator("#script").inner_text()
    # off duty (离岗): the mobile is the default
    assert page.get_by_label("我的手机").is_checked()
    page.evaluate("window.notReloaded = true")
    page.get_by_role("button", name="呼叫").tap()
    wait_text(page, "#m-message", "手机正在振铃")
    wait_text(page, "#call-state", "通话中")
    # in the call the page says what is going on: not "your mobile is ringing",
    # nor the task's 待呼叫 0/3 from before the call
    assert page.locator("#m-message").is_hidden()
    wait_text(page, "#task-meta", "呼叫次数 1/")
    assert "待呼叫" not in page.inner_text("#task-status")
    page.screenshot(path=str(out / "mobile-call.png"))
    wait_text(page, "#call-state", "已结束")
    assert "已接听" in page.inner_text("#call-state")
    # the task's chips and its calls follow without a reload
    wait_text(page, "#task-meta", "呼叫次数 1/")
    wait_text(page, "#task-calls", "已接听")
    assert page.evaluate("window.notReloaded") is True
    assert carrier.wait(30) == 0, carrier.trace_summary()

    # the carrier saw the unified number on both legs, never the manager's own numbers
    invites = {m.first_line.split("@")[0].split(":")[1]: m for m in carrier.received("INVITE")}
    assert set(invites) == {MOBILE, CUSTOMER}
    for invite in invites.values():
        assert f"sip:{UNIFIED}@" in invite.header("From")
        assert f"sip:{UNIFIED}@" in invite.header("P-Asserted-Identity")
    assert MOBILE not in invites[CUSTOMER].text and "8001" not in invites[CUSTOMER].text

    # the result, with the call it is about
    page.locator("#result-form label", has_text="1 回访成功").tap()
    page.get_by_label("备注").fill("手机回访，客户满意")
    with page.expect_navigation():
        page.get_by_role("button", name="保存结果").tap()
    assert "结果已保存" in page.locator(".flash-success").inner_text()
    with env.sessions() as s:
        call = s.scalar(select(Call).where(Call.task_id == task_id))
        assert (call.manager_device, call.state, call.outcome) == ("mobile", "ended",
                                                                   "answered")
        assert call.recording_path and call.talk_seconds >= 1
        feedback = s.scalar(select(Feedback).where(Feedback.task_id == task_id))
        assert (feedback.call_id, feedback.note) == (call.id, "手机回访，客户满意")
        assert s.get(Task, task_id).status == "done"
    env.wait_final(call.id, recording=True)


def test_refusals_are_shown_on_the_phone(served, phone):
    env, base, password = served
    task_id = env.task_for("8001", "13812346002")
    with db.unit_of_work(env.sessions) as s:  # a manager with no mobile cannot pick it
        s.scalar(select(Manager).where(Manager.desk_extension == "8001")).mobile = None
    page = phone
    phone_log_in(page, base, "m8001", password)
    page.goto(f"{base}/m/tasks/{task_id}")
    assert page.get_by_label("我的手机").is_disabled()
    assert page.get_by_label("座机").is_checked()
    assert "没有登记手机号码" in page.locator("#no-mobile").inner_text()
    # a forged choice is refused by the service, with what to do
    page.evaluate("document.querySelector('input[value=mobile]').disabled = false")
    page.get_by_label("我的手机").check()
    page.get_by_role("button", name="呼叫").tap()
    wait_text(page, "#m-message", "请用座机呼叫")
    with env.sessions() as s:
        assert s.scalar(select(Call).where(Call.task_id == task_id)) is None
        assert s.get(Task, task_id).status == "pending"


# -- layout at 375 px: no wrapped Chinese word, tap targets of 44 px -------------------
# every element whose text must stay on one line: buttons, tabs, chips, labels, cells
ONE_LINE = ("button, .btn, .tab, .chip, .bar-btn, .brand, .back, .foot a, legend, label, "
            "th, td, .calls span")
TAP_TARGETS = "a, button, select, textarea, input:not([type=hidden]):not([type=radio])" \
              ":not([type=checkbox]), label:has(input)"

LAYOUT_PROBLEMS = """([oneLine, targets]) => {
  const problems = [];
  const width = document.documentElement.clientWidth;
  if (document.documentElement.scrollWidth > width)
    problems.push(`the page is wider than the screen: ${document.documentElement.scrollWidth}px`);
  const visible = el => { const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== 'hidden'; };
  for (const el of document.querySelectorAll(oneLine)) {
    if (!visible(el) || !el.textContent.trim()) continue;
    const range = document.createRange();
    range.selectNodeContents(el);
    const text = range.getBoundingClientRect();
    const line = parseFloat(getComputedStyle(el).lineHeight);
    if (text.height >= 1.5 * line)
      problems.push(`"${el.textContent.trim()}" wraps: ${text.height}px of text, lines of ${line}px`);
    if (el.scrollWidth > el.clientWidth + 1 && getComputedStyle(el).overflowX !== 'auto')
      problems.push(`"${el.textContent.trim()}" overflows its box`);
  }
  for (const el of document.querySelectorAll(targets)) {
    if (!visible(el)) continue;
    const r = el.getBoundingClientRect();
    if (r.height < 44 || r.width < 44)
      problems.push(`tap target "${(el.textContent || el.name || el.tagName).trim()}" is ` +
                    `${Math.round(r.width)}×${Math.round(r.height)}px`);
  }
  return problems;
}"""


@pytest.fixture
def phone_demo(server, browser):
    """The demo data, served, in a phone-sized page."""
    context = browser.new_context(**PHONE)
    problems = csp_problems(context)
    yield server, context.new_page()
    context.close()
    assert not problems, problems


def test_phone_pages_keep_words_whole_and_targets_large(phone_demo, tmp_path):
    (base, seeded), page = phone_demo

    def check(path):
        page.goto(base + path)
        problems = page.evaluate(LAYOUT_PROBLEMS, [ONE_LINE, TAP_TARGETS])
        assert problems == [], (path, problems)

    check("/m/login")
    phone_log_in(page, base, "manager1", seeded["passwords"]["manager1"])
    for tab in ("todo", "callback", "connected", "not_reached", "done"):
        check(f"/m/?tab={tab}")
    check("/m/?q=0001")  # a search: its note and its "clear" link
    page.goto(base + "/m/")
    page.screenshot(path=str(screenshots_dir(tmp_path) / "mobile-tasks.png"))
    page.goto(base + "/m/")
    first = page.locator("a.card").first.get_attribute("href")
    check(first)
    # the result form's refusal (no result chosen) shows on the same page, laid out alike
    with page.expect_navigation():
        page.get_by_role("button", name="保存结果").tap()
    assert page.locator("#result-form .error").count() >= 1
    assert page.evaluate(LAYOUT_PROBLEMS, [ONE_LINE, TAP_TARGETS]) == []
    # English is longer: it must fit too
    check(first + "?lang=en")
    check("/m/?lang=en")


def test_the_duty_switch_on_the_phone_sets_the_phone_that_rings(phone_demo):
    (base, seeded), page = phone_demo
    phone_log_in(page, base, "manager1", seeded["passwords"]["manager1"])
    task = page.locator("a.card").first.get_attribute("href")
    page.goto(base + task)
    assert page.get_by_label("我的手机").is_checked()      # 离岗: away from the desk
    page.goto(base + "/m/?tab=todo")
    with page.expect_navigation():
        page.get_by_role("button", name="切换为在岗").tap()
    assert page.url == f"{base}/m/?tab=todo"
    assert "您已在岗" in page.locator(".flash-success").inner_text()
    assert page.locator("#duty .chip").inner_text() == "在岗"
    page.goto(base + task)
    assert page.get_by_label("座机").is_checked()          # 在岗: at the desk
    page.goto(base + "/m/")
    with page.expect_navigation():
        page.get_by_role("button", name="切换为离岗").tap()
    assert page.locator("#duty .chip").inner_text() == "离岗"


# -- without the phone system: reminders, and a call's live state on the task's page ---
@pytest.fixture(scope="module")
def phone_app(tmp_path_factory):
    """The demo data served with quick page timers; the app, to move rows."""
    app, seeded = make_app(tmp_path_factory.mktemp("phone"), {"calling_window": "00:00-24:00"})
    app.config.update(WORKSPACE_POLL_MS=200, WORKSPACE_REMINDER_SECONDS=1)
    with serve(app) as base:
        yield app, base, seeded


@pytest.fixture
def phone_page(browser):
    """A phone-sized page of the module's browser; fails on a CSP violation."""
    context = browser.new_context(**PHONE)
    problems = csp_problems(context)
    page = context.new_page()
    page.set_default_timeout(WAIT_MS)
    yield page
    context.close()
    assert not problems, problems


def own_tasks(app, username):
    with session_for(app) as s:
        return s.scalars(select(Task.id).join(Manager, Manager.id == Task.manager_id)
                         .join(User, User.id == Manager.user_id)
                         .where(User.username == username, Task.status == "pending")
                         .order_by(Task.id)).all()


def set_appointment(app, task_id, ago):
    with session_for(app) as s:
        s.get(Task, task_id).appointment_at = utcnow() - ago
        s.commit()


def test_due_call_backs_are_on_the_phones_first_page(phone_app, phone_page):
    phone = phone_page
    app, base, seeded = phone_app
    first, second = own_tasks(app, "manager1")[:2]
    set_appointment(app, first, dt.timedelta(seconds=5))
    phone_log_in(phone, base, "manager1", seeded["passwords"]["manager1"])
    reminder = phone.locator(f"#reminders a[data-task='{first}']")
    assert "预约回电时间到" in reminder.inner_text()
    assert phone.evaluate(LAYOUT_PROBLEMS, [ONE_LINE, TAP_TARGETS]) == []
    # asked again while the page is open, as on the desktop: a new one, and one overdue
    set_appointment(app, second, dt.timedelta(hours=2))
    wait_text(phone, f"#reminders a[data-task='{second}']", "已逾期")
    assert phone.evaluate(LAYOUT_PROBLEMS, [ONE_LINE, TAP_TARGETS]) == []
    phone.locator(f"#reminders a[data-task='{second}']").tap()
    phone.wait_for_url(f"**/m/tasks/{second}")
    assert "已逾期" in phone.inner_text("#task-meta")


def call_moves(app, call_id, state, outcome=None):
    """The call row goes to `state`, and its task follows, as the AMI bridge does it."""
    with session_for(app) as s:
        call = s.get(Call, call_id)
        call.state, call.outcome = state, outcome
        tasks.follow_call(s, s.get(Task, call.task_id), call)
        s.commit()


def test_the_phone_page_follows_a_two_leg_call_and_its_result_waits(phone_app, phone_page):
    phone = phone_page
    app, base, seeded = phone_app
    task_id = own_tasks(app, "manager1")[-1]
    with session_for(app) as s:  # what 呼叫 with 我的手机 leaves in the database
        manager = s.scalar(select(Manager).join(User).where(User.username == "manager1"))
        call_id = dialing.request_call(s, Settings(calling_window="00:00-24:00"), manager.user,
                                       task_id, device="mobile").id
        s.commit()
    call_moves(app, call_id, "manager_ringing")
    phone_log_in(phone, base, "manager1", seeded["passwords"]["manager1"])
    phone.goto(f"{base}/m/tasks/{task_id}")
    wait_text(phone, "#call-state", "手机振铃")
    assert "呼叫中" in phone.inner_text("#task-status")
    # no result is chosen for the manager; the form says the call is on
    assert phone.locator("#result-form input[name=result_code]:checked").count() == 0
    assert phone.locator("#live-call").is_visible()
    # the customer's phone rings: one attempt, on the page without a reload
    phone.evaluate("window.notReloaded = true")
    call_moves(app, call_id, "customer_ringing")
    wait_text(phone, "#task-meta", "呼叫次数 1/3")
    call_moves(app, call_id, "connected")
    wait_text(phone, "#call-state", "通话中")
    wait_text(phone, "#task-status", "已接通")
    assert phone.evaluate(LAYOUT_PROBLEMS, [ONE_LINE, TAP_TARGETS]) == []
    # a result while the call is on is refused, and says why
    phone.locator("#result-form label", has_text="1 回访成功").tap()
    with phone.expect_navigation():
        phone.get_by_role("button", name="保存结果").tap()
    assert "通话仍在进行中：请在通话结束后保存结果" in phone.inner_text("#live-call")
    with session_for(app) as s:
        assert s.scalar(select(Feedback).where(Feedback.task_id == task_id)) is None
    # the call ends: the warning goes, and the result is saved
    phone.evaluate("window.notReloaded = true")
    call_moves(app, call_id, "ended", "answered")
    wait_text(phone, "#call-state", "已结束")
    phone.locator("#live-call").wait_for(state="hidden")
    assert phone.evaluate("window.notReloaded") is True
    phone.locator("#result-form label", has_text="1 回访成功").tap()
    with phone.expect_navigation():
        phone.get_by_role("button", name="保存结果").tap()
    assert "结果已保存" in phone.locator(".flash-success").inner_text()
