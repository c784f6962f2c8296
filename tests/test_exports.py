"""Exports a county asks for (khhf.services.exports): its customers with
their manager and latest result, a campaign's tasks with status and
result, as XLSX and CSV from the buttons on the customers and campaign
pages; numbers whole, within the user's scope, each in the operation log
without a number."""

import csv
import io
import json
import os
import re
import stat
import subprocess
import sys

import pytest
from openpyxl import load_workbook
from sqlalchemy import func, select

from khhf.models import AuditLog, Campaign, Customer, ResultCode, Task, User
from khhf.services import campaigns, results
from simkit import factories
from simkit.web import log_in_as, make_app, session_for

CUSTOMER_HEADERS = ["客户编号", "客户姓名", "电话", "县区", "客户经理", "工号", "请勿呼叫",
                    "最近结果", "最近结果时间", "备注", "创建时间"]
TASK_HEADERS = ["任务编号", "客户姓名", "电话", "客户经理", "工号", "状态", "结果", "结果时间",
                "呼叫次数", "预约回拨时间", "最近呼叫时间"]


@pytest.fixture
def site(tmp_path):
    """The demo county (with a result filed twice on one customer's task,
    the later one counts) and a neighbouring county with one customer."""
    app, seeded = make_app(tmp_path)
    with session_for(app) as s:
        manager1 = s.scalar(select(User).where(User.username == "manager1"))
        task = s.scalar(select(Task).where(Task.manager_id == manager1.manager.id)
                        .order_by(Task.id))
        codes = s.scalars(select(ResultCode).where(ResultCode.task_type_id == task.task_type_id)
                          .order_by(ResultCode.id)).all()
        callback = next(c for c in codes if not c.is_final)
        final = next(c for c in codes if c.is_final)
        results.file_result(s, manager1, task.id, callback.id)
        results.file_result(s, manager1, task.id, final.id)
        other = factories.county(s, "other", "邻县")
        stranger = factories.customer(s, other, "13900009999",
                                      factories.manager(s, other, "manager9"))
        s.commit()
        facts = {"campaign": seeded["campaign"]["id"], "task": task.id,
                 "task_customer": task.customer_id, "result": final.label,
                 "county": seeded["county"]["name"], "other_county": other.id, "stranger": stranger.phone,
                 "county_phones": set(s.scalars(select(Customer.phone).where(
                     Customer.county_id == seeded["county"]["id"])))}
    return app, facts


def _press(client, page: str, button: str):
    """Press the export button `button` on `page` (its form, with the page's
    CSRF token), as the browser would."""
    html = client.get(page).get_data(as_text=True)
    form = re.search(r'<form method="post" action="([^"]+)">(?:(?!</form>).)*?id="'
                     + button + '"', html, re.S)
    assert form, f"no button {button} on {page}"
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form.group(0)).group(1)
    action = form.group(1).replace("&amp;", "&")
    return client.post(action, data={"csrf_token": token})


def _xlsx(response):
    assert response.status_code == 200, response.status_code
    sheet = load_workbook(io.BytesIO(response.data), read_only=True).worksheets[0]
    return [["" if v is None else v for v in row] for row in sheet.iter_rows(values_only=True)]


def _csv(response):
    assert response.status_code == 200, response.status_code
    assert response.data.startswith("\ufeff".encode())  # Excel reads the Chinese
    return list(csv.reader(io.StringIO(response.data.decode("utf-8-sig"))))


def _exports(app):
    with session_for(app) as s:
        return s.scalars(select(AuditLog).where(AuditLog.action == "export")
                         .order_by(AuditLog.id)).all()


def test_a_supervisor_exports_the_countys_customers(site):
    app, facts = site
    client = app.test_client()
    log_in_as(client, app, "supervisor")
    for button, read in (("export-xlsx", _xlsx), ("export-csv", _csv)):
        rows = read(_press(client, "/customers/", button))
        assert rows[0] == CUSTOMER_HEADERS
        body = {str(r[2]): r for r in rows[1:]}
        assert set(body) == facts["county_phones"]          # whole numbers, own county only
        with session_for(app) as s:
            customer = s.get(Customer, facts["task_customer"])
            row = body[customer.phone]
            assert row[4] == customer.manager.user.display_name
            assert row[5] == customer.manager.employee_no
        assert row[7] == facts["result"] and row[8]            # the later of the two results
        assert sum(1 for r in body.values() if r[7]) == 1
    entries = _exports(app)
    assert [(e.username, e.object_type, e.object_name) for e in entries] == \
        [("supervisor", "county", facts["county"])] * 2
    assert [json.loads(e.detail) for e in entries] == [
        {"kind": "customers", "format": fmt, "rows": len(facts["county_phones"])}
        for fmt in ("xlsx", "csv")]
    logged = " ".join(f"{e.object_name} {e.object_id} {e.detail}" for e in entries)
    assert not re.search(r"\d{7}", logged)                     # never a number
    admin = app.test_client()
    log_in_as(admin, app, "admin")
    page = admin.get("/audit/?q=supervisor").get_data(as_text=True)
    assert (f"导出了县区 {facts['county']}的 {len(facts['county_phones'])} 位客户（XLSX）"
            in page), page


def test_a_campaigns_tasks_with_status_and_result(site):
    app, facts = site
    client = app.test_client()
    log_in_as(client, app, "supervisor")
    page = f"/campaigns/{facts['campaign']}"
    for button, read in (("export-xlsx", _xlsx), ("export-csv", _csv)):
        rows = read(_press(client, page, button))
        assert rows[0] == TASK_HEADERS
        with session_for(app) as s:
            ids = s.scalars(select(Task.id).where(Task.campaign_id == facts["campaign"])
                            .order_by(Task.id)).all()
            done = s.get(Task, facts["task"])
            phone = done.customer.phone
        assert [int(r[0]) for r in rows[1:]] == ids
        row = next(r for r in rows[1:] if int(r[0]) == facts["task"])
        assert row[2] == phone and row[5] == "已完成" and row[6] == facts["result"] and row[7]
        assert {r[5] for r in rows[1:] if int(r[0]) != facts["task"]} == {"待呼叫"}
    entries = _exports(app)
    with session_for(app) as s:
        name = s.get(Campaign, facts["campaign"]).name
    assert [(e.object_type, e.object_id, e.object_name, json.loads(e.detail)["rows"])
            for e in entries] == [("campaign", str(facts["campaign"]), name, len(ids))] * 2


def test_an_administrator_exports_every_county_or_the_one_chosen(site):
    app, facts = site
    client = app.test_client()
    log_in_as(client, app, "admin")
    every = _csv(_press(client, "/customers/", "export-csv"))
    assert {r[2] for r in every[1:]} == facts["county_phones"] | {facts["stranger"]}
    chosen = _csv(_press(client, f"/customers/?county={facts['other_county']}", "export-csv"))
    assert [r[2] for r in chosen[1:]] == [facts["stranger"]]
    assert [(e.object_type, e.object_name) for e in _exports(app)] == \
        [("", ""), ("county", "邻县")]


def test_scope_is_enforced_and_refusals_write_nothing(site):
    app, facts = site
    supervisor, manager = app.test_client(), app.test_client()
    log_in_as(supervisor, app, "supervisor")
    log_in_as(manager, app, "manager1")
    app.config["WTF_CSRF_ENABLED"] = False  # the bare POSTs a page would not make
    try:
        # another county's customers, or a campaign outside the county: not found
        assert supervisor.post(f"/customers/export.csv?county={facts['other_county']}"
                               ).status_code == 404
        with session_for(app) as s:
            ours = s.get(Campaign, facts["campaign"])
            other = campaigns.create_campaign(
                s, None, "", county_id=facts["other_county"], task_type_id=ours.task_type_id,
                name="邻县回访", cycle="once", starts_on=ours.starts_on, ends_on=ours.ends_on)
            s.commit()
        assert supervisor.post(f"/campaigns/{other.id}/tasks/export.csv").status_code == 404
        # managers export nothing: their customers leave only through the county
        assert manager.post("/customers/export.xlsx").status_code == 403
        assert manager.post(f"/campaigns/{facts['campaign']}/tasks/export.xlsx"
                            ).status_code == 403
        assert 'id="export-xlsx"' not in manager.get("/customers/").get_data(as_text=True)
    finally:
        app.config["WTF_CSRF_ENABLED"] = True
    # a GET writes nothing, so an export is not one
    assert supervisor.get("/customers/export.csv").status_code == 405
    assert _exports(app) == []


def _khhf(app, *args):
    conf = app.extensions["khhf_settings"].config_path
    environ = {k: v for k, v in os.environ.items() if not k.startswith("KHHF_")}
    return subprocess.run([sys.executable, "-m", "khhfcli.main", "--config", str(conf), *args],
                          env=environ, capture_output=True, text=True, timeout=60)


def test_the_command_line_exports_the_same_and_is_audited(site, tmp_path):
    app, facts = site
    with session_for(app) as s:
        code = s.scalar(select(Customer).where(Customer.id == facts["task_customer"])).county.code
    out = tmp_path / "客户.csv"
    proc = _khhf(app, "customers", "export", str(out), "--county", code, "--by", "admin")
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(out.stat().st_mode) == 0o600            # whole numbers: owner only
    rows = list(csv.reader(io.StringIO(out.read_text(encoding="utf-8-sig"))))
    assert rows[0] == CUSTOMER_HEADERS and {r[2] for r in rows[1:]} == facts["county_phones"]
    tasks = tmp_path / "任务.xlsx"
    proc = _khhf(app, "tasks", "export", str(facts["campaign"]), str(tasks))
    assert proc.returncode == 0, proc.stderr
    book = load_workbook(tasks, read_only=True)   # read-only keeps the file open: close it
    rows = list(book.worksheets[0].iter_rows(values_only=True))
    book.close()
    assert list(rows[0]) == TASK_HEADERS
    assert any(r[0] == facts["task"] and r[5] == "已完成" and r[6] == facts["result"]
               for r in rows[1:])
    assert [(e.username, e.ip, json.loads(e.detail)["kind"]) for e in _exports(app)] == \
        [("admin", "cli", "customers"), ("system", "cli", "tasks")]
    proc = _khhf(app, "tasks", "export", str(facts["campaign"]), str(tmp_path / "t.txt"))
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1
    assert "name the file .xlsx or .csv" in proc.stderr and not (tmp_path / "t.txt").exists()
    proc = _khhf(app, "customers", "export", str(tmp_path / "c.csv"), "--county", "nowhere")
    assert proc.returncode == 1 and "there is no county with the code 'nowhere'" in proc.stderr
    assert not (tmp_path / "c.csv").exists() and len(_exports(app)) == 2


@pytest.mark.postgres
def test_the_exports_on_postgresql(pg_database, tmp_path):
    """The same queries (keyset batches, the latest result per customer) on
    PostgreSQL."""
    from khhf import config, db
    from simkit import seed as demo
    from webui import create_app
    engine = pg_database("exports")
    db.create_schema(engine)
    with db.unit_of_work(db.session_factory(engine)) as s:
        seeded = demo.seed(s)
        manager1 = s.scalar(select(User).where(User.username == "manager1"))
        task = s.scalar(select(Task).where(Task.manager_id == manager1.manager.id)
                        .order_by(Task.id))
        final = s.scalars(select(ResultCode).where(ResultCode.task_type_id == task.task_type_id,
                                                   ResultCode.is_final)).first()
        results.file_result(s, manager1, task.id, final.id)
        phone = task.customer.phone
        customers = s.scalar(select(func.count(Customer.id)))
    settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path,
                                database_url=engine.url.render_as_string(hide_password=False))
    app = create_app(settings, {"TESTING": True, "WTF_CSRF_ENABLED": False})
    try:
        client = app.test_client()
        log_in_as(client, app, "supervisor")
        rows = _csv(client.post("/customers/export.csv"))
        assert rows[0] == CUSTOMER_HEADERS and len(rows) == 1 + customers
        assert next(r for r in rows[1:] if r[2] == phone)[7] == final.label
        tasks = _xlsx(client.post(f"/campaigns/{seeded['campaign']['id']}/tasks/export.xlsx"))
        assert next(r for r in tasks[1:] if r[0] == task.id)[6] == final.label
        assert [json.loads(e.detail)["kind"] for e in _exports(app)] == ["customers", "tasks"]
    finally:
        app.extensions["khhf_engine"].dispose()
