"""The do-not-call register and consent: `khhf dnc import` (dry run, all
or nothing, Chinese row reasons), the administrator's page (import, add,
remove, list), a 不再联系 result code adding the customer, consent on the
customer page, the task type form's rules; every change audited."""

from __future__ import annotations

import io

import openpyxl
import pytest
from sqlalchemy import func, select

from khhf import audit
from khhf.models import AuditLog, Customer, DncEntry, Manager, ResultCode, Task, TaskType, User
from khhf.services import ValidationError, campaigns, results
from khhfcli import main as cli
from simkit import factories
from simkit.web import log_in_as, make_app, session_for


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app, _ = make_app(tmp_path_factory.mktemp("dnc"), WTF_CSRF_ENABLED=False)
    return app


def xlsx(rows) -> bytes:
    book = openpyxl.Workbook()
    for row in rows:
        book.active.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def count(app, model=DncEntry) -> int:
    with session_for(app) as s:
        return s.scalar(select(func.count()).select_from(model))


def test_the_cli_import_checks_then_writes_all_or_nothing(app, tmp_path, capsys):
    conf = str(app.extensions["khhf_settings"].config_path)
    good = tmp_path / "免打扰.csv"
    good.write_text("号码,登记日期,来源,原因\n138 0013 9001,2026-11-01,12321举报,投诉骚扰\n"
                    "+8613800139002,,,\n", encoding="gb18030")
    assert cli.main(["--config", conf, "dnc", "import", str(good)]) == 0
    assert "将加入免打扰名单 2 个号码" in capsys.readouterr().out and count(app) == 0
    bad = tmp_path / "坏.csv"
    bad.write_text("号码,登记日期\n13800139003,2026-11-02\n12345,2026-11-02\n"
                   "13800139003,明天\n", encoding="utf-8")
    assert cli.main(["--config", conf, "dnc", "import", str(bad), "--commit"]) == 3
    err = capsys.readouterr().err
    assert "第 3 行" in err and "第 4 行" in err and count(app) == 0
    assert cli.main(["--config", conf, "dnc", "import", str(good), "--commit", "--by",
                     "admin"]) == 0
    with session_for(app) as s:
        entries = {e.number: e for e in s.scalars(select(DncEntry))}
        assert set(entries) == {"13800139001", "13800139002"}
        assert (entries["13800139001"].source, entries["13800139001"].reason,
                str(entries["13800139001"].listed_on)) == ("12321举报", "投诉骚扰", "2026-11-01")
        assert entries["13800139002"].source == "免打扰.csv"
        logged = s.scalars(select(AuditLog).where(AuditLog.object_type == "dnc_entry")).one()
        assert logged.action == "import" and logged.ip == "cli"
        assert audit.load_detail(logged)["imported"] == 2


def test_the_admin_page_imports_adds_and_removes_with_reasons(app):
    client = app.test_client()
    log_in_as(client, app, "admin")
    before = count(app)
    page = client.post("/admin/dnc/import", data={
        "file": (io.BytesIO(xlsx([["手机号码", "原因"], ["13800139011", "客户要求"],
                                  ["不是号码", ""]])), "名单.xlsx")})
    assert page.status_code == 422 and "第 3 行" in page.get_data(as_text=True)
    assert count(app) == before
    ok = client.post("/admin/dnc/import", data={
        "file": (io.BytesIO(xlsx([["手机号码", "原因"], ["13800139011", "客户要求"]])),
                 "名单.xlsx"), "commit": "y"})
    assert ok.status_code == 302 and count(app) == before + 1
    with session_for(app) as s:
        customer = s.scalars(select(Customer).order_by(Customer.id)).first()
        phone, customer_id = customer.phone, customer.id
    assert client.post("/admin/dnc/add", data={"number": phone, "reason": ""}).status_code == 200
    assert client.post("/admin/dnc/add", data={"number": phone, "source": "营业厅",
                                               "reason": "客户当面要求"}).status_code == 302
    with session_for(app) as s:
        assert s.get(Customer, customer_id).do_not_call
        entry_id = s.scalar(select(DncEntry.id).where(DncEntry.number == phone))
    html = client.get("/admin/dnc").get_data(as_text=True)
    assert "免打扰名单" in html and "客户当面要求" in html and phone not in html
    assert client.post(f"/admin/dnc/{entry_id}/remove", data={"reason": ""}).status_code == 200
    assert client.post(f"/admin/dnc/{entry_id}/remove",
                       data={"reason": "客户重新同意"}).status_code == 302
    with session_for(app) as s:
        assert not s.get(Customer, customer_id).do_not_call
        actions = [a for a, in s.execute(select(AuditLog.action).where(
            AuditLog.object_type == "dnc_entry").order_by(AuditLog.id))]
        assert actions[-3:] == ["import", "create", "delete"]


def test_a_no_more_calls_result_lists_the_customer_saying_who_and_why(app):
    with session_for(app) as s:
        manager = s.scalar(select(Manager).join(User).where(User.username == "manager1"))
        task_type = campaigns.save_task_type(
            s, None, "", None, code="care2", name="关怀", max_attempts=3, codes=[
                {"code": "1", "label": "成功", "is_final": True},
                {"code": "9", "label": "不再联系", "is_final": True, "stops_calls": True}])
        customer = factories.customer(s, manager.county, "13800139021", manager)
        task = factories.task(s, customer, manager, task_type)
        code = s.scalar(select(ResultCode).where(ResultCode.task_type_id == task_type.id,
                                                 ResultCode.code == "9"))
        results.file_result(s, manager.user, task.id, code.id)
        s.commit()
        entry = s.scalar(select(DncEntry).where(DncEntry.number == "13800139021"))
        assert (entry.channel, entry.added_by, entry.reason, entry.source) == \
            ("result", manager.user_id, "9 不再联系", "关怀")
        assert s.get(Customer, customer.id).do_not_call
        assert s.get(Task, task.id).status == "done"


def test_task_type_rules_consent_not_for_return_visits_stopping_codes_final(app):
    with session_for(app) as s:
        with pytest.raises(ValidationError) as refused:
            campaigns.save_task_type(s, None, "", None, code="rv2", name="回访二", max_attempts=3,
                                     kind="revisit", requires_consent=True, codes=[
                                         {"code": "1", "label": "成功", "is_final": True},
                                         {"code": "9", "label": "不再联系",
                                          "stops_calls": True}])
        fields = {p.field for p in refused.value.problems}
        assert fields == {"requires_consent", "codes"}
        s.rollback()
    client = app.test_client()
    log_in_as(client, app, "admin")
    page = client.post("/campaigns/types/new", data={
        "code": "mk2", "name": "营销二", "max_attempts": "3", "kind": "revisit",
        "requires_consent": "y", "codes-0-code": "1", "codes-0-label": "成功",
        "codes-0-is_final": "y"})
    assert "回访不能要求客户同意" in page.get_data(as_text=True)
    page = client.post("/campaigns/types/new", data={
        "code": "mk2", "name": "营销二", "max_attempts": "3", "kind": "marketing",
        "requires_consent": "y", "codes-0-code": "1", "codes-0-label": "成功",
        "codes-0-is_final": "y", "codes-1-code": "9", "codes-1-label": "不再联系",
        "codes-1-is_final": "y", "codes-1-stops_calls": "y"})
    assert page.status_code == 302
    with session_for(app) as s:
        made = s.scalar(select(TaskType).where(TaskType.code == "mk2"))
        assert (made.kind, made.requires_consent) == ("marketing", True)
        assert {c.code: c.stops_calls for c in made.result_codes} == {"1": False, "9": True}


def test_consent_is_recorded_with_its_source_and_audited(app):
    with session_for(app) as s:
        customer = s.scalars(select(Customer).order_by(Customer.id.desc())).first()
        customer_id = customer.id
    client = app.test_client()
    log_in_as(client, app, "admin")
    assert client.post(f"/customers/{customer_id}/consent",
                       data={"consent": "1", "source": ""}).status_code == 200
    assert client.post(f"/customers/{customer_id}/consent",
                       data={"consent": "1", "source": "营业厅签字"}).status_code == 302
    html = client.get(f"/customers/{customer_id}").get_data(as_text=True)
    assert "营业厅签字" in html
    with session_for(app) as s:
        customer = s.get(Customer, customer_id)
        assert customer.consent and customer.consent_at is not None
        entry = s.scalars(select(AuditLog).where(AuditLog.object_type == "customer",
                                                 AuditLog.object_id == str(customer_id))
                          .order_by(AuditLog.id.desc())).first()
        assert audit.load_detail(entry)["changes"]["consent"] == [False, True]


@pytest.mark.parametrize("engine_kind", ["sqlite", "postgresql"])
def test_the_customer_import_sets_consent_and_flags_listed_numbers(request, tmp_path,
                                                                   engine_kind):
    from khhf import db
    from khhf.models import DncChannel
    from khhf.services import dnc, imports
    if engine_kind == "sqlite":
        engine = db.make_engine(f"sqlite:///{tmp_path / 'i.db'}")
    else:
        engine = request.getfixturevalue("pg_database")("dncimp")
    db.create_schema(engine)
    factory = db.session_factory(engine)
    with db.unit_of_work(factory) as s:
        factories.county(s, "anji", "安吉")
        dnc.add(s, None, "", "13800139031", channel=DncChannel.IMPORT, reason="12321")
    path = tmp_path / "客户.csv"
    path.write_text("手机号码,客户姓名,同意营销\n13800139031,甲,是\n13800139032,乙,\n"
                    "13800139033,丙,√\n", encoding="utf-8")
    bad = tmp_path / "坏.csv"
    bad.write_text("手机号码,同意营销\n13800139034,也许\n", encoding="utf-8")
    with factory() as s:
        report = imports.check(s, "customers", bad, imports.Options(county_code="anji"))
        assert report.rejects[0].problems[0][:2] == ("同意营销", "也许")
    with db.unit_of_work(factory) as s:
        imports.run(s, "customers", path, imports.Options(county_code="anji"), commit=True)
    with factory() as s:
        got = {c.phone: (c.consent, c.consent_source, c.consent_at is not None, c.do_not_call)
               for c in s.scalars(select(Customer))}
    assert got == {"13800139031": (True, "文件导入", True, True),
                   "13800139032": (False, "", False, False),
                   "13800139033": (True, "文件导入", True, False)}
    engine.dispose()
