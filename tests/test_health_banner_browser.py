"""The staff's health banner in a real browser (Debian's chromium): while
another process holds SQLite's write lock, an administrator's pages say the
database is locked and what to do, a customer manager's say only that
nothing can be saved now; once the lock is released the banner goes."""

import time

from simkit.browser import log_in, serve
from simkit.drills.database import SqliteHeld
from simkit.web import make_app

ADMIN_LINE = "数据库无法访问或被锁定"
MANAGER_LINE = "系统暂时无法保存，请稍后再试。"


def banner_text(page, url: str, want: bool, timeout: float = 30) -> str:
    """The database's banner line after reloading `url` until it is there
    (`want`) or gone: the checks refresh in the background every few seconds."""
    deadline = time.monotonic() + timeout
    while True:
        page.goto(url)
        line = page.locator("#health-banner [data-check='database']")
        text = line.inner_text() if line.count() else ""
        if bool(text) == want or time.monotonic() > deadline:
            return text
        time.sleep(1)


def test_staff_see_the_database_held_and_then_released(browser, page, tmp_path):
    app, seeded = make_app(tmp_path)
    manager_context = browser.new_context(locale="zh-CN")
    manager = manager_context.new_page()
    held = SqliteHeld(tmp_path / "web.db")
    try:
        with serve(app) as base:
            log_in(page, base, "admin", seeded["passwords"]["admin"])
            log_in(manager, base, "manager1", seeded["passwords"]["manager1"])
            assert banner_text(page, f"{base}/admin/", want=False) == ""
            held.begin()
            text = banner_text(page, f"{base}/admin/", want=True)
            assert ADMIN_LINE in text and "khhf status" in text, text
            mine = banner_text(manager, f"{base}/manager/", want=True)
            assert mine == MANAGER_LINE
            # a manager reads what stops their work (here also: no PBX, no bridge),
            # never the administrator's commands
            assert "khhf" not in manager.locator("#health-banner").inner_text()
            held.end()
            assert banner_text(page, f"{base}/admin/", want=False) == ""
            assert banner_text(manager, f"{base}/manager/", want=False) == ""
    finally:
        held.end()
        manager_context.close()
        app.extensions["khhf_engine"].dispose()
