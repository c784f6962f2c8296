"""The reports pages (webui/reports.py) through the app: who sees which
figures (a supervisor their county, a manager their own, an administrator
all), the drill-down, and the exports (XLSX with Chinese headers, numbers
as numbers and widths set; CSV in UTF-8 with a BOM), checked against
khhf.services.reports and the raw rows."""

from __future__ import annotations

import csv
import datetime as dt
import io
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from sqlalchemy import func, select

from khhf.models import Call, County, Manager, Task, User, utcnow
from khhf.services import reports
from simkit import factories, report_data
from simkit.web import log_in_as, make_app, session_for

ZONE = "Asia/Shanghai"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """The demo app, a second county (邻县) with its own supervisor and
    managers, and ten days of generated history in both."""
    app, seeded = make_app(tmp_path_factory.mktemp("reports"))
    now = utcnow()
    with session_for(app) as s:
        demo = s.scalar(select(County).where(County.code == "demo"))
        other = factories.county(s, "other", "邻县")
        factories.user(s, "other_supervisor", "supervisor", other)
        for k in (1, 2):
            factories.manager(s, other, f"other{k}", desk=f"97{k}0")
        report_data.generate(s, start=now - dt.timedelta(days=12), days=8,
                             counties=[demo, other])
        reports.refresh_due(s, ZONE, now=now)
        s.commit()
        ids = dict(demo=demo.id, other=other.id,
                   manager1=s.scalar(select(Manager.id).join(User)
                                     .where(User.username == "manager1")),
                   other1=s.scalar(select(Manager.id).join(User)
                                   .where(User.username == "other1")))
    return app, ids


def client_as(app, username):
    client = app.test_client()
    log_in_as(client, app, username)
    return client


def period():
    today = dt.datetime.now(dt.timezone.utc).astimezone(ZoneInfo(ZONE)).date()
    return today - dt.timedelta(days=10), today


def test_a_supervisor_sees_their_county_and_not_another(world):
    app, ids = world
    client = client_as(app, "supervisor")
    start, end = period()
    q = dict(start=start.isoformat(), end=end.isoformat())
    assert client.get("/reports/", query_string=q).status_code == 200
    for extra in ({"county": ids["other"]}, {"manager": ids["other1"]}):
        for path in ("/reports/", "/reports/export.xlsx", "/reports/export.csv"):
            assert client.get(path, query_string={**q, **extra}).status_code == 404, (path, extra)
        assert client.get("/reports/drill", query_string={
            **q, **extra, "figure": "calls_out"}).status_code == 404
    html = client.get("/reports/", query_string=q).get_data(as_text=True)
    with session_for(app) as s:
        others = s.scalars(select(User.display_name).join(Manager)
                           .where(Manager.county_id == ids["other"])).all()
    assert not any(name in html for name in others)


def test_a_manager_sees_only_their_own_figures(world):
    app, ids = world
    client = client_as(app, "manager1")
    start, end = period()
    q = dict(start=start.isoformat(), end=end.isoformat())
    assert client.get("/reports/", query_string={**q, "manager": ids["other1"]}).status_code == 404
    assert client.get("/reports/", query_string={**q, "county": ids["other"]}).status_code == 404
    data = client.get("/reports/export.csv", query_string=q).get_data(as_text=True)
    rows = list(csv.reader(io.StringIO(data.lstrip("\ufeff"))))
    head, values = rows[1], rows[2]
    with session_for(app) as s:
        lo, hi = reports.day_bounds(ZONE, start)[0], reports.day_bounds(ZONE, end)[1]
        own = s.scalar(select(func.count()).select_from(Call).where(
            Call.direction == "outbound", Call.manager_id == ids["manager1"],
            Call.requested_at >= lo, Call.requested_at < hi))
        figures = reports.summary(s, reports.Filter(start, end, manager_id=ids["manager1"]))
    assert int(values[head.index("外呼次数")]) == figures.calls_out == own
    # drilled rows are all theirs
    html = client.get("/reports/drill", query_string={**q, "figure": "calls_out"}).get_data(
        as_text=True)
    assert html.count("data-call=") == min(own, reports.DRILL_PAGE)


def test_xlsx_export_has_chinese_headers_numbers_and_widths(world):
    app, ids = world
    client = client_as(app, "admin")
    start, end = period()
    response = client.get("/reports/export.xlsx",
                          query_string=dict(start=start.isoformat(), end=end.isoformat()))
    assert response.status_code == 200
    book = openpyxl.load_workbook(io.BytesIO(response.data))
    assert book.sheetnames == ["汇总", "每日趋势", "客户经理", "结果分布"]
    sheet = book["汇总"]
    head = [c.value for c in sheet[1]]
    values = [c.value for c in sheet[2]]
    assert head[:5] == ["期间", "已分配任务", "外呼次数", "接通次数", "接通率"]
    with session_for(app) as s:
        figures = reports.summary(s, reports.Filter(start, end))
        lo, hi = reports.day_bounds(ZONE, start)[0], reports.day_bounds(ZONE, end)[1]
        assert values[head.index("已分配任务")] == figures.tasks_assigned == s.scalar(
            select(func.count()).select_from(Task).where(Task.created_at >= lo,
                                                         Task.created_at < hi))
    assert isinstance(values[head.index("接通次数")], int)
    rate = values[head.index("反馈率")]
    assert isinstance(rate, float) and abs(rate - figures.feedback_rate) < 1e-9
    assert sheet.column_dimensions["B"].width >= 10
    days = list(book["每日趋势"].iter_rows(min_row=2, values_only=True))
    assert len(days) == (end - start).days + 1
    assert sum(d[head.index("外呼次数")] for d in days) == figures.calls_out


def test_drill_export_streams_the_rows_behind_a_figure(world):
    app, ids = world
    client = client_as(app, "supervisor")
    start, end = period()
    q = dict(start=start.isoformat(), end=end.isoformat(), figure="calls_connected")
    response = client.get("/reports/drill.csv", query_string=q)
    text = response.get_data(as_text=True)
    assert text.startswith("\ufeff")
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))[2:]
    with session_for(app) as s:
        figures = reports.summary(s, reports.Filter(start, end, county_id=ids["demo"]))
    assert len(rows) == figures.calls_connected
    assert all("****" in r[4] for r in rows)  # customer numbers masked
    book = openpyxl.load_workbook(io.BytesIO(
        client.get("/reports/drill.xlsx", query_string=q).data))
    assert book.active.max_row == figures.calls_connected + 1


@pytest.mark.parametrize("who", ["manager1", "supervisor"])
def test_the_managers_page_shows_their_feedback_rate_this_month(world, who):
    """The feedback rate (issue 11) on the manager's own page, as the
    manager and as their supervisor see it: the same query as the reports."""
    app, ids = world
    html = client_as(app, who).get(f"/manager/{ids['manager1']}").get_data(as_text=True)
    today = dt.datetime.now(dt.timezone.utc).astimezone(ZoneInfo(ZONE)).date()
    with session_for(app) as s:
        figures = reports.summary(s, reports.Filter(today.replace(day=1), today,
                                                    manager_id=ids["manager1"]))
    rate = figures.feedback_rate
    shown = "—" if rate is None else f"{rate * 100:.1f}%"
    assert f'data-figure="feedback_rate">{shown}<' in html
    assert "反馈率" in html
    assert f"/reports/?manager={ids['manager1']}" in html
