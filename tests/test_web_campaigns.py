"""Campaign, distribution and task-type pages through the test client with
CSRF on: who sees what, what a form does and refuses, the audit log."""

import datetime as dt

import pytest
from sqlalchemy import func, select

from khhf import config, db
from khhf.models import AuditLog, Campaign, ResultCode, Task, TaskType
from khhf.services import accounts
from simkit import factories
from simkit.web import csrf_token, log_in, make_app, session_for
from webui import create_app


@pytest.fixture
def web(tmp_path):
    return make_app(tmp_path)


def _client(app, seeded, username):
    client = app.test_client()
    assert log_in(client, username, seeded["passwords"][username]).status_code == 302
    return client


def _post(client, path, data):
    return client.post(path, data={**data, "csrf_token": csrf_token(client, path)})


def other_county_campaign(app) -> int:
    with session_for(app) as s:
        other = factories.county(s, "other", "外县")
        revisit = s.scalar(select(TaskType).where(TaskType.code == "revisit"))
        c = Campaign(county_id=other.id, task_type_id=revisit.id, name="外县回访",
                     starts_on=dt.date.today(), ends_on=dt.date.today())
        s.add(c)
        s.commit()
        return c.id


def test_supervisor_sees_own_campaigns_only(web):
    app, seeded = web
    foreign = other_county_campaign(app)
    sup = _client(app, seeded, "supervisor")
    own = seeded["campaign"]["id"]
    assert "示范回访批次" in sup.get("/campaigns/").get_data(as_text=True)
    assert "外县回访" not in sup.get("/campaigns/").get_data(as_text=True)
    for path in ("", "/edit", "/distribute", "/tasks"):
        assert sup.get(f"/campaigns/{foreign}{path}").status_code == 404
        assert sup.get(f"/campaigns/{own}{path}").status_code == 200
    assert sup.get("/campaigns/types").status_code == 403
    manager = _client(app, seeded, "manager1")
    assert manager.get(f"/campaigns/{own}").status_code == 403
    admin = _client(app, seeded, "admin")
    assert admin.get(f"/campaigns/{foreign}").status_code == 200


def test_supervisor_home_shows_the_campaign_progress(web):
    app, seeded = web
    html = _client(app, seeded, "supervisor").get("/county/").get_data(as_text=True)
    assert "任务进度" in html and "示范回访批次" in html
    # three managers with three tasks each
    assert html.count('<td class="text-end">3</td>') >= 3


def test_supervisor_cannot_create_a_campaign_in_another_county(web):
    app, seeded = web
    foreign = other_county_campaign(app)
    with session_for(app) as s:
        other_county = s.get(Campaign, foreign).county_id
        revisit = s.scalar(select(TaskType.id).where(TaskType.code == "revisit"))
    sup = _client(app, seeded, "supervisor")
    response = _post(sup, "/campaigns/new", {
        "name": "越权", "county_id": str(other_county), "task_type_id": str(revisit),
        "cycle": "weekly", "starts_on": "2026-12-01", "ends_on": "", "selection": "county"})
    assert response.status_code == 200 and "请选择批次所属的县区" in response.get_data(as_text=True)
    with session_for(app) as s:
        assert s.scalar(select(func.count()).select_from(Campaign)
                        .where(Campaign.name == "越权")) == 0


def test_manual_reassignment_page_moves_selected_tasks(web):
    app, seeded = web
    cid = seeded["campaign"]["id"]
    m3 = seeded["managers"]["manager3"]["id"]
    with session_for(app) as s:
        chosen = s.scalars(select(Task.id).where(Task.campaign_id == cid)
                           .order_by(Task.id).limit(2)).all()
    sup = _client(app, seeded, "supervisor")
    path = f"/campaigns/{cid}/tasks"
    response = sup.post(path, data={"csrf_token": csrf_token(sup, path), "manager_id": str(m3),
                                    "task_ids": [str(t) for t in chosen]})
    assert response.status_code == 302
    with session_for(app) as s:
        assert {s.get(Task, t).manager_id for t in chosen} == {m3}
        entry = s.scalar(select(AuditLog).where(AuditLog.detail.like('%"manager"%')))
        assert entry.username == "supervisor" and entry.object_type == "campaign"
        assert f'"tasks": [{chosen[0]}, {chosen[1]}]' in entry.detail


def test_admin_adds_a_task_type_and_sees_every_problem(web):
    app, seeded = web
    admin = _client(app, seeded, "admin")
    bad = _post(admin, "/campaigns/types/new", {
        "code": "Care!", "name": "", "max_attempts": "lots", "script": "",
        "codes-0-code": "123", "codes-0-label": "x"}).get_data(as_text=True)
    for text in ("最多尝试次数", "请填写 1 到 2 位数字", "请至少把一个结果代码标为“结束”"):
        assert text in bad
    good = _post(admin, "/campaigns/types/new", {
        "code": "care", "name": "关怀", "max_attempts": "2", "script": "您好，这里是关怀回访",
        "codes-0-code": "1", "codes-0-label": "关怀成功", "codes-0-is_success": "y",
        "codes-0-is_final": "y", "codes-1-code": "3", "codes-1-label": "无人接听"})
    assert good.status_code == 302
    with session_for(app) as s:
        t = s.scalar(select(TaskType).where(TaskType.code == "care"))
        assert [(c.code, c.is_final) for c in t.result_codes] == [("1", True), ("3", False)]
        assert t.script == "您好，这里是关怀回访"
        assert s.scalar(select(AuditLog).where(AuditLog.object_type == "task_type",
                                               AuditLog.username == "admin")) is not None


def test_admin_sets_a_types_automatic_outcomes_in_its_form(web):
    """The form lists the five unreached outcomes with the type's rules; a
    "try again" code without a final closing code is refused, in Chinese."""
    app, seeded = web
    admin = _client(app, seeded, "admin")
    with session_for(app) as s:
        revisit = s.scalar(select(TaskType).where(TaskType.code == "revisit"))
        type_id, codes = revisit.id, revisit.result_codes
        fields = {"code": revisit.code, "name": revisit.name, "max_attempts": "3",
                  **{f"codes-{i}-{k}": v for i, c in enumerate(codes) for k, v in (
                      ("code", c.code), ("label", c.label))},
                  **{f"codes-{i}-is_final": "y" for i, c in enumerate(codes) if c.is_final}}
    path = f"/campaigns/types/{type_id}"
    page = admin.get(path).get_data(as_text=True)
    assert all(word in page for word in ("自动结果", "无人接听", "忙线", "无法接通", "空号",
                                         "呼叫被拒", "重拨间隔（分钟）"))
    rules = {f"rules-{i}-outcome": o for i, o in enumerate(
        ("no_answer", "busy", "unreachable", "empty_number", "rejected"))}
    refused = _post(admin, path, {**fields, **rules, "rules-1-code": "3",
                                  "rules-1-retry_minutes": "15", "rules-1-max_retries": "1",
                                  "rules-1-close_code": "6"}).get_data(as_text=True)
    assert "自动结果“忙线”：3 表示“再拨”" in refused
    saved = _post(admin, path, {**fields, **rules, "rules-1-code": "3",
                                "rules-1-retry_minutes": "15", "rules-1-max_retries": "1",
                                "rules-1-close_code": "5", "rules-3-code": "5"})
    assert saved.status_code == 302
    with session_for(app) as s:
        from khhf.services import campaigns
        revisit = s.get(TaskType, type_id)
        assert campaigns.describe_rules(revisit.outcome_rules) == "忙线→3 15分钟×1→5, 空号→5"
        entry = s.scalars(select(AuditLog).where(AuditLog.object_type == "task_type")
                          .order_by(AuditLog.id)).all()[-1]
        assert "忙线→3 15分钟×1→5" in entry.detail and entry.username == "admin"


def test_the_task_types_page_of_a_fresh_database_writes_nothing(tmp_path):
    """Defect: the first GET of the task types page created the standard
    types (and their audit entries). A page view writes nothing: `khhf init`
    makes them; the page says so."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    engine = db.make_engine(url)
    db.create_schema(engine)
    with db.unit_of_work(db.session_factory(engine)) as s:
        accounts.create_user(s, None, "", username="admin", display_name="管理员",
                             password="a-long-enough-secret", role="admin", county_id=None)
    engine.dispose()
    app = create_app(config.write_new(tmp_path / "khhf.conf", home=tmp_path, database_url=url),
                     {"TESTING": True})
    client = app.test_client()
    assert log_in(client, "admin", "a-long-enough-secret").status_code == 302

    def counts():
        with session_for(app) as s:
            return [s.scalar(select(func.count()).select_from(t))
                    for t in (TaskType, ResultCode, AuditLog)]
    before = counts()
    page = client.get("/campaigns/types")
    assert page.status_code == 200
    assert counts() == before and before[:2] == [0, 0]
    assert "运行 khhf init" in page.get_data(as_text=True)
