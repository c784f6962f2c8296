"""The web UI in a real browser: Debian's chromium, headless, driven by
Playwright, against the app served on 127.0.0.1 from a background thread.

Screenshots of the main pages go to tmp_path, or to $KHHF_SCREENSHOTS_DIR
when it is set (scripts/screenshots sets it to docs/screenshots)."""

import os
import re
import shutil
from pathlib import Path

import pytest

from simkit.browser import csp_problems, log_in, require_chromium

require_chromium()


@pytest.mark.parametrize("username, path, heading", [
    ("admin", "/admin/", "系统管理"),
    ("supervisor", "/county/", "示范县"),
    ("manager1", "/manager/", "张伟，您好"),
])
def test_each_role_logs_in_and_sees_its_home(server, page, username, path, heading):
    base, seeded = server
    log_in(page, base, username, seeded["passwords"][username])
    assert page.url == base + path
    assert page.get_by_role("heading", level=1).inner_text() == heading
    role_label = {"admin": "管理员", "supervisor": "县区经理", "manager1": "客户经理"}[username]
    assert page.locator("#who").inner_text().endswith(role_label)


def test_admin_creates_a_manager_who_then_logs_in(server, browser, page):
    base, seeded = server
    log_in(page, base, "admin", seeded["passwords"]["admin"])
    page.get_by_role("link", name="客户经理", exact=True).click()
    page.get_by_role("link", name="新增客户经理").click()
    page.get_by_label("用户名").fill("chenjing")
    page.get_by_label("姓名").fill("陈静")
    page.get_by_label("密码").fill("first-pass-9")
    page.get_by_label("县区").select_option(label="示范县 (demo)")
    page.get_by_label("工号").fill("D200")
    page.get_by_label("座机分机号").fill("123")  # wrong first: told what to do
    page.get_by_label("手机号").fill("13912340000")
    page.get_by_role("button", name="保存").click()
    assert "2000–9999 之间的 4 位数字" in page.locator(".invalid-feedback").inner_text()
    page.get_by_label("密码").fill("first-pass-9")  # passwords are not sent back
    page.get_by_label("座机分机号").fill("8200")
    page.get_by_role("button", name="保存").click()
    assert "已新增客户经理“陈静”" in page.locator(".alert-success").inner_text()
    assert page.locator("#managers").get_by_text("8200").count() == 1

    other = browser.new_context(locale="zh-CN")
    newcomer = other.new_page()
    log_in(newcomer, base, "chenjing", "first-pass-9")
    assert newcomer.get_by_role("heading", level=1).inner_text() == "陈静，您好"
    newcomer.get_by_role("button", name="切换为在岗").click()
    assert "您已在岗" in newcomer.locator(".alert-success").inner_text()
    other.close()


def test_manager_cannot_open_others_pages_by_url(server, page):
    base, seeded = server
    log_in(page, base, "manager1", seeded["passwords"]["manager1"])
    own = seeded["managers"]["manager1"]["id"]
    other = seeded["managers"]["manager2"]["id"]
    assert page.goto(f"{base}/manager/{own}").status == 200
    response = page.goto(f"{base}/manager/{other}")
    assert response.status == 404
    assert "王芳" not in page.content()
    for path in ("/admin/managers", f"/admin/managers/{other}", "/audit/", "/county/"):
        response = page.goto(base + path)
        assert response.status == 403, path
        assert "您无权打开此页面" in page.locator("#error-message").inner_text()


def test_form_without_csrf_token_is_refused(server, page):
    base, seeded = server
    log_in(page, base, "admin", seeded["passwords"]["admin"])
    page.goto(f"{base}/admin/counties/new")
    page.evaluate("document.querySelector('main form input[name=csrf_token]').remove()")
    page.get_by_label("代码").fill("nocsrf")
    page.get_by_label("县区名称").fill("无令牌县")
    with page.expect_response(re.compile(r"/admin/counties/new$")) as answer:
        page.get_by_role("button", name="保存").click()
    assert answer.value.status == 400
    assert "安全令牌" in page.locator("#error-message").inner_text()
    page.goto(f"{base}/admin/counties")
    assert "无令牌县" not in page.content()


def test_audit_log_shows_log_ins_failures_and_writes(server, page):
    base, seeded = server
    log_in(page, base, "manager3", "not-my-password")
    assert "用户名或密码错误" in page.content()
    log_in(page, base, "admin", seeded["passwords"]["admin"])
    page.get_by_role("link", name="操作日志", exact=True).click()
    table = page.locator("#audit")
    assert table.get_by_text("登录失败").count() >= 1
    page.get_by_label("搜索", exact=True).fill("manager3")
    page.get_by_label("操作").select_option(label="登录失败")
    page.get_by_role("button", name="搜索").click()
    rows = page.locator("#audit tbody tr")
    assert rows.count() == 1 and "李娜 登录失败：密码错误。" in rows.inner_text()
    # found by the person's name, and read as a sentence
    page.get_by_label("搜索", exact=True).fill("张伟")
    page.get_by_label("操作").select_option(label="新增")
    page.get_by_role("button", name="搜索").click()
    text = page.locator("#audit").inner_text()
    assert "系统 新增了客户经理 张伟：用户名 manager1" in text
    assert "138****8001" in text and "13800138001" not in text


def test_screenshots_of_the_main_pages(server, browser, tmp_path):
    base, seeded = server
    out = Path(os.environ.get("KHHF_SCREENSHOTS_DIR") or tmp_path)
    out.mkdir(parents=True, exist_ok=True)
    shots = []

    def shoot(page, name):
        path = out / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shots.append(path)

    context = browser.new_context(viewport={"width": 1280, "height": 760}, locale="zh-CN")
    page = context.new_page()
    page.goto(f"{base}/login")
    shoot(page, "login")
    log_in(page, base, "admin", seeded["passwords"]["admin"])
    shoot(page, "admin-home")
    page.goto(f"{base}/admin/managers")
    shoot(page, "admin-managers")
    page.goto(f"{base}/admin/managers/new")
    shoot(page, "admin-manager-new")
    page.goto(f"{base}/audit/")
    shoot(page, "audit-log")
    context.close()
    for username, pages in (("manager1", [("/manager/", "manager-home"),
                                          (f"/manager/{seeded['managers']['manager1']['id']}",
                                           "manager-profile")]),
                            ("supervisor", [("/county/", "supervisor-home")])):
        context = browser.new_context(viewport={"width": 1280, "height": 760}, locale="zh-CN")
        page = context.new_page()
        log_in(page, base, username, seeded["passwords"][username])
        for path, name in pages:
            page.goto(base + path)
            shoot(page, name)
        context.close()
    for path in shots:
        assert path.stat().st_size > 10_000, path
    if out != tmp_path:
        shutil.rmtree(tmp_path, ignore_errors=True)


def test_pages_work_under_the_content_security_policy(server, browser):
    """Every main page of every role, on a narrow screen where the menu is
    behind Bootstrap's toggler (its script must run): no CSP violation."""
    base, seeded = server
    pages = {"admin": ["/admin/", "/admin/counties", "/admin/counties/new", "/admin/users",
                       "/admin/users/new", "/admin/managers", "/admin/managers/new",
                       "/audit/", "/audit/?page=2"],
             "supervisor": ["/county/"],
             "manager1": ["/manager/", f"/manager/{seeded['managers']['manager1']['id']}"]}
    for username, paths in pages.items():
        context = browser.new_context(viewport={"width": 480, "height": 800}, locale="zh-CN")
        problems = csp_problems(context)
        page = context.new_page()
        log_in(page, base, username, seeded["passwords"][username])
        for path in paths:
            response = page.goto(base + path)
            assert response.status == 200, path
            assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
            menu = page.locator("#nav")
            assert not menu.is_visible(), path
            page.get_by_role("button", name="菜单").click()
            menu.wait_for(state="visible")
            assert page.get_by_role("button", name="退出").is_visible(), path
        # the watcher can fail: an image from another origin is refused and reported
        with page.expect_console_message(lambda m: "CSP violation: img-src" in m.text):
            page.evaluate("""() => { const img = document.createElement('img');
                                     img.src = 'http://127.0.0.2:9/x.png';
                                     document.body.appendChild(img); }""")
        assert any("img-src" in p for p in problems), problems
        problems[:] = [p for p in problems if "127.0.0.2" not in p]
        assert not problems, (username, problems)
        context.close()
