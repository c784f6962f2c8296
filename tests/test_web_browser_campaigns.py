"""Campaigns in a real browser (Debian's chromium via Playwright): an
administrator creates a weekly campaign, starts it, previews and commits an
average distribution; the supervisor sees its progress on their home and
cannot open another county's campaign by URL."""

import datetime as dt
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from khhf.models import Campaign, TaskType
from simkit import factories
from simkit.web import make_app, session_for
from simkit.browser import log_in, serve


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The app on 127.0.0.1 (as in test_web_browser), with the app itself to arrange data."""
    app, seeded = make_app(tmp_path_factory.mktemp("browser-campaigns"))
    with serve(app) as base:
        yield base, seeded, app


def shot(page, name):
    target = os.environ.get("KHHF_SCREENSHOTS_DIR")
    if target:
        page.screenshot(path=str(Path(target) / name), full_page=True)


def test_admin_creates_a_weekly_campaign_and_distributes_it(server, page):
    base, seeded, _app = server
    log_in(page, base, "admin", seeded["passwords"]["admin"])
    page.get_by_role("link", name="任务批次").click()
    page.get_by_role("link", name="新建批次").click()
    page.get_by_label("批次名称").fill("十二月周回访")
    page.get_by_label("任务类型").select_option(label="回访")
    page.get_by_label("周期").select_option(label="每周")
    page.get_by_label("拨打对象").select_option(label="本县区全部客户")
    page.get_by_role("button", name="保存").click()
    page.wait_for_load_state()
    assert "已创建批次 十二月周回访（草稿）" in page.locator(".alert").inner_text()
    page.get_by_role("button", name="启动批次").click()
    page.wait_for_load_state()
    # the demo county's nine customers
    assert "批次已启动：生成了 9 个任务" in page.locator(".alert").inner_text()
    assert "第 2 轮" in page.locator("#campaign-facts").inner_text()
    page.get_by_role("link", name="任务分配").click()
    page.get_by_label("分配方式").select_option("average")
    page.get_by_label("张伟 (D001)").check()
    page.get_by_label("王芳 (D002)").check()
    page.get_by_role("button", name="预览").click()
    page.wait_for_load_state()
    rows = page.locator("#preview tbody tr").all_inner_texts()
    after = {r.split("\t")[0]: r.split("\t")[-1] for r in rows}
    assert after == {"张伟": "5", "王芳": "4", "李娜": "0"}
    shot(page, "campaign-distribution-preview.png")
    page.get_by_role("button", name="确认分配").click()
    page.wait_for_load_state()
    assert "分配已保存：共 9 个任务" in page.locator(".alert").inner_text()
    progress = {r.split("\t")[0]: r.split("\t")[1]
                for r in page.locator("#progress tbody tr").all_inner_texts()}
    assert progress == {"张伟": "5", "王芳": "4"}


def test_supervisor_sees_progress_but_not_another_countys_campaign(server, page):
    base, seeded, app = server
    with session_for(app) as s:
        other = factories.county(s, "far", "远县")
        revisit = s.scalar(select(TaskType.id).where(TaskType.code == "revisit"))
        foreign = Campaign(county_id=other.id, task_type_id=revisit, name="远县回访",
                           starts_on=dt.date.today(), ends_on=dt.date.today())
        s.add(foreign)
        s.commit()
        foreign_id = foreign.id
    log_in(page, base, "supervisor", seeded["passwords"]["supervisor"])
    assert page.get_by_role("heading", name="任务进度").is_visible()
    table = page.locator(f"#progress-{seeded['campaign']['id']}")
    rows = table.locator("tbody tr").all_inner_texts()
    assert sorted(r.split("\t")[0] for r in rows) == ["张伟", "李娜", "王芳"]
    assert all(r.split("\t")[1] == "3" for r in rows)
    shot(page, "supervisor-campaign-progress.png")
    response = page.goto(f"{base}/campaigns/{foreign_id}")
    assert response.status == 404
    page.goto(f"{base}/campaigns/")
    assert "远县回访" not in page.locator("#campaigns").inner_text()

