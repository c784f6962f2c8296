"""Reports in a real browser (Debian's chromium): a supervisor filters a
report, drills down to the calls behind a figure, exports XLSX (the file
is opened and its figures checked against the database), and cannot see
another county's; a manager sees their own figures only."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from sqlalchemy import func, select

from khhf.models import Call, County, Manager, User, utcnow
from khhf.services import reports
from simkit import factories, report_data
from simkit.browser import log_in, serve
from simkit.web import make_app, session_for

ZONE = "Asia/Shanghai"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    app, seeded = make_app(tmp_path_factory.mktemp("reports-browser"))
    now = utcnow()
    with session_for(app) as s:
        demo = s.scalar(select(County).where(County.code == "demo"))
        other = factories.county(s, "other", "邻县")
        factories.manager(s, other, "other1", desk="9710", display_name="邻县经理")
        report_data.generate(s, start=now - dt.timedelta(days=12), days=8,
                             counties=[demo, other])
        reports.refresh_due(s, ZONE, now=now)
        s.commit()
        ids = dict(other=other.id, other1=s.scalar(select(Manager.id).join(User).where(
            User.username == "other1")), manager2=s.scalar(select(Manager.id).join(User).where(
                User.username == "manager2")), manager1=s.scalar(select(Manager.id).join(User)
                                                                 .where(User.username == "manager1")))
    with serve(app) as base:
        yield app, base, seeded["passwords"], ids


def direct_calls(app, lo_day, hi_day, manager_id, connected=False):
    """Outbound calls of a manager in a period, counted straight from the calls table."""
    lo, hi = reports.day_bounds(ZONE, lo_day)[0], reports.day_bounds(ZONE, hi_day)[1]
    conds = [Call.direction == "outbound", Call.manager_id == manager_id,
             Call.requested_at >= lo, Call.requested_at < hi]
    if connected:
        conds.append(Call.answer_at.is_not(None))
    with session_for(app) as s:
        return s.scalar(select(func.count()).select_from(Call).where(*conds))


def figure(page, key):
    return page.locator(f'#figures [data-figure="{key}"] .figure-value').inner_text().strip()


def test_a_supervisor_filters_drills_down_and_exports(served, page, tmp_path):
    app, base, passwords, ids = served
    today = dt.datetime.now(dt.timezone.utc).astimezone(ZoneInfo(ZONE)).date()
    start = today - dt.timedelta(days=10)
    log_in(page, base, "supervisor", passwords["supervisor"])
    page.get_by_role("link", name="统计报表").click()
    page.wait_for_load_state()
    page.fill("#start", start.isoformat())
    page.fill("#end", today.isoformat())
    page.select_option("#manager", label="王芳")
    page.click("#report-apply")
    page.wait_for_load_state()
    calls = direct_calls(app, start, today, ids["manager2"])
    connected = direct_calls(app, start, today, ids["manager2"], connected=True)
    assert calls and connected
    assert figure(page, "calls_out") == str(calls)
    assert figure(page, "calls_connected") == str(connected)
    assert page.locator("#trend svg rect").count() >= 11
    # scripts/screenshots keeps this one in docs/screenshots
    shots = Path(os.environ.get("KHHF_SCREENSHOTS_DIR") or tmp_path)
    page.screenshot(path=str(shots / "reports-supervisor.png"), full_page=True)

    # drill down: the connected calls behind the figure, all the manager's
    page.click('#figures [data-figure="calls_connected"]')
    page.wait_for_load_state()
    assert page.locator("#drill tbody tr[data-call]").count() == connected
    shown = {int(x) for x in page.locator("#drill tbody tr[data-call]").evaluate_all(
        "rows => rows.map(r => r.dataset.call)")}
    with session_for(app) as s:
        rows = s.scalars(select(Call).where(Call.id.in_(shown))).all()
    assert {c.manager_id for c in rows} == {ids["manager2"]}
    assert all(c.answer_at is not None for c in rows)
    page.get_by_role("link", name="返回报表").click()
    page.wait_for_load_state()

    # export XLSX and check the file against the database
    with page.expect_download() as download:
        page.click("#export-xlsx")
    path = tmp_path / "report.xlsx"
    download.value.save_as(path)
    book = openpyxl.load_workbook(path)
    head = [c.value for c in book["汇总"][1]]
    values = [c.value for c in book["汇总"][2]]
    assert values[head.index("外呼次数")] == calls
    assert values[head.index("接通次数")] == connected
    days = list(book["每日趋势"].iter_rows(min_row=2, values_only=True))
    assert sum(d[head.index("外呼次数")] for d in days) == calls

    # another county's figures are not theirs to see
    for query in (f"county={ids['other']}", f"manager={ids['other1']}"):
        response = page.goto(f"{base}/reports/?{query}")
        assert response.status == 404
    page.goto(f"{base}/reports/")
    assert "邻县经理" not in page.content()


def test_a_manager_sees_only_their_own_figures(served, page):
    app, base, passwords, ids = served
    today = dt.datetime.now(dt.timezone.utc).astimezone(ZoneInfo(ZONE)).date()
    log_in(page, base, "manager1", passwords["manager1"])
    page.get_by_role("link", name="我的统计").click()
    page.wait_for_load_state()
    assert figure(page, "calls_out") == str(direct_calls(app, today.replace(day=1), today,
                                                         ids["manager1"]))
    assert page.locator("#manager").count() == 0   # no other manager to choose
    assert page.locator("#ranking").count() == 0
    response = page.goto(f"{base}/reports/?manager={ids['manager2']}")
    assert response.status == 404
