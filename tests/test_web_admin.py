"""Administration pages, the manager's own pages and the audit log, through
the test client with CSRF on: what a form does, what it refuses, and what
the operation log says about it."""

import re

import pytest
from sqlalchemy import func, select

from khhf.models import AuditLog, County, Customer, Manager, UnifiedNumber, User
from khhf.phones import mask_phone
from simkit.web import csrf_token, log_in, make_app, session_for

NEW_MANAGER = {"username": "zhaolei", "display_name": "赵磊", "password": "initial-pass-1",
               "employee_no": "D100", "desk_extension": "8100", "mobile": "+86 139-1234-5678"}


@pytest.fixture
def web(tmp_path):
    app, seeded = make_app(tmp_path)
    return app, seeded


def _client(app, seeded, username):
    client = app.test_client()
    assert log_in(client, username, seeded["passwords"][username]).status_code == 302
    return client


def _post(client, path, data):
    return client.post(path, data={**data, "csrf_token": csrf_token(client, path)})


def _count(app, model, *where):
    with session_for(app) as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def test_admin_creates_a_manager_who_then_logs_in(web):
    app, seeded = web
    admin = _client(app, seeded, "admin")
    data = {**NEW_MANAGER, "county_id": str(seeded["county"]["id"])}
    response = _post(admin, "/admin/managers/new", data)
    assert response.status_code == 302
    assert "已新增客户经理" in admin.get(response.location).get_data(as_text=True)
    with session_for(app) as s:
        manager = s.scalar(select(Manager).join(User).where(User.username == "zhaolei"))
        assert (manager.desk_extension, manager.mobile, manager.user.role) == (
            "8100", "13912345678", "manager")
        entry = s.scalar(select(AuditLog).where(AuditLog.action == "create",
                                                AuditLog.object_type == "manager",
                                                AuditLog.username == "admin"))
        assert "139****5678" in entry.detail and entry.ip == "127.0.0.1"
        assert "13912345678" not in entry.detail
    new = app.test_client()
    assert log_in(new, "zhaolei", "initial-pass-1").status_code == 302
    assert "赵磊" in new.get("/manager/").get_data(as_text=True)


def test_bad_manager_input_names_every_problem_in_chinese_and_writes_nothing(web):
    app, seeded = web
    admin = _client(app, seeded, "admin")
    users_before = _count(app, User)
    response = _post(admin, "/admin/managers/new", {
        "username": "manager1", "display_name": "", "password": "short",
        "county_id": "", "employee_no": "D001", "desk_extension": "123",
        "mobile": "12345"})
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    for message in ("用户名 manager1 已被使用", "请填写姓名", "密码至少需要 8 个字符",
                    "请选择此人所属的县区", "工号 D001 已属于其他客户经理",
                    "座机分机号须为 2000–9999 之间的 4 位数字", "手机号须为以 1 开头的 11 位数字"):
        assert message in html, message
    assert _count(app, User) == users_before
    # a taken extension is named too
    response = _post(admin, "/admin/managers/new", {
        **NEW_MANAGER, "desk_extension": "8001", "county_id": str(seeded["county"]["id"])})
    assert "分机号 8001 已被占用" in response.get_data(as_text=True)
    assert _count(app, User) == users_before


def test_a_second_manager_with_the_same_mobile_is_refused(web):
    """On creation and on edit, whatever the spelling of the number."""
    app, seeded = web
    admin = _client(app, seeded, "admin")
    users_before = _count(app, User)
    response = _post(admin, "/admin/managers/new", {
        **NEW_MANAGER, "mobile": "+86 138 0013 8001", "county_id": str(seeded["county"]["id"])})
    assert response.status_code == 200
    html = response.get_data(as_text=True)
    assert "手机号 13800138001 已是客户经理 张伟（D001）的号码" in html, html
    assert _count(app, User) == users_before
    manager3 = seeded["managers"]["manager3"]["id"]
    response = _post(admin, f"/admin/managers/{manager3}", {
        "display_name": "李娜", "county_id": str(seeded["county"]["id"]), "employee_no": "D003",
        "desk_extension": "8003", "mobile": "13800138002", "status": "active"})
    assert "手机号 13800138002 已是客户经理 王芳（D002）的号码" in response.get_data(as_text=True)
    with session_for(app) as s:
        assert s.get(Manager, manager3).mobile == "13800138003"
    # keeping one's own number is no conflict
    response = _post(admin, f"/admin/managers/{manager3}", {
        "display_name": "李娜", "county_id": str(seeded["county"]["id"]), "employee_no": "D003",
        "desk_extension": "8003", "mobile": "13800138003", "status": "active"})
    assert response.status_code == 302


def test_the_database_refuses_a_shared_mobile_too(web):
    from sqlalchemy.exc import IntegrityError
    app, _ = web
    with session_for(app) as s:
        manager = s.scalar(select(Manager).join(User).where(User.username == "manager3"))
        manager.mobile = "13800138001"
        with pytest.raises(IntegrityError):
            s.commit()


def test_departing_a_manager_takes_them_off_duty_and_out(web):
    app, seeded = web
    manager_id = seeded["managers"]["manager2"]["id"]
    manager = _client(app, seeded, "manager2")
    assert _post(manager, "/manager/", {"on_duty": "1"}).status_code == 405
    response = manager.post(f"/manager/{manager_id}/duty", data={
        "on_duty": "1", "csrf_token": csrf_token(manager, "/manager/")})
    assert response.status_code == 302
    assert "您已在岗" in manager.get(response.location).get_data(as_text=True)
    assert _count(app, Manager, Manager.on_duty) == 1
    admin = _client(app, seeded, "admin")
    response = _post(admin, f"/admin/managers/{manager_id}", {
        "display_name": "王芳", "county_id": str(seeded["county"]["id"]),
        "employee_no": "D002", "desk_extension": "8002", "mobile": "13800138002",
        "status": "departed"})
    assert response.status_code == 302
    with session_for(app) as s:
        m = s.get(Manager, manager_id)
        assert (m.status, m.on_duty, m.user.is_active) == ("departed", False, False)
        assert m.departed_at is not None
        # their customers were handed over to the county's other managers
        assert s.scalar(select(func.count()).select_from(Customer)
                        .where(Customer.manager_id == manager_id)) == 0
    assert manager.get("/manager/").status_code == 302  # logged out: user disabled
    assert log_in(app.test_client(), "manager2",
                  seeded["passwords"]["manager2"]).status_code == 401


def test_a_departing_manager_hands_over_to_a_chosen_successor(web):
    """The choices are the county's other active managers, by pinyin: 王芳
    (wang) before 张伟 (zhang), though 张伟 was added first."""
    app, seeded = web
    admin = _client(app, seeded, "admin")
    manager3 = seeded["managers"]["manager3"]["id"]
    html = admin.get(f"/admin/managers/{manager3}").get_data(as_text=True)
    select_html = re.search(r'<select[^>]*name="successor".*?</select>', html, re.S).group(0)
    options = re.findall(r"<option[^>]*>([^<]*)</option>", select_html)
    assert options == ["— 平均分配给本县其他在职客户经理 —", "王芳 (D002)", "张伟 (D001)"]
    response = _post(admin, f"/admin/managers/{manager3}", {
        "display_name": "李娜", "county_id": str(seeded["county"]["id"]), "employee_no": "D003",
        "desk_extension": "8003", "mobile": "13800138003", "status": "departed",
        "successor": str(seeded["managers"]["manager2"]["id"])})
    assert response.status_code == 302
    with session_for(app) as s:
        assert s.get(Manager, manager3).successor_id == seeded["managers"]["manager2"]["id"]
        owners = set(s.scalars(select(Customer.manager_id).where(Customer.phone.in_(
            ["13700000007", "13700000008", "13700000009"]))))
        assert owners == {seeded["managers"]["manager2"]["id"]}


def test_manager_lists_sort_by_pinyin(web):
    app, seeded = web
    html = _client(app, seeded, "admin").get("/admin/managers").get_data(as_text=True)
    table = html[html.index('id="managers"'):]
    assert table.index("李娜") < table.index("王芳") < table.index("张伟")


# unified numbers as an administrator might type them: the first three are
# refused by the trunk's dialplan and by Originate, the rest are one number
UNIFIED_AS_TYPED = ["12345678901", "10012345678", "01012345678",
                    "13900000021", "+86 139-0000-0022", "008613900000023"]


@pytest.mark.parametrize("typed", UNIFIED_AS_TYPED)
def test_the_county_form_refuses_what_the_dialer_would_refuse(web, typed):
    from ami_bridge.originate import OriginateError, OutboundCall, originate_action
    app, seeded = web
    admin = _client(app, seeded, "admin")
    response = _post(admin, "/admin/counties/new", {
        "code": "anji", "name": "安吉县", "fallback_strategy": "ringall",
        "numbers": typed, "primary": ""})
    with session_for(app) as s:
        county = s.scalar(select(County).where(County.code == "anji"))
        stored = county.primary_number if county else None

    def originate(unified):
        return originate_action(OutboundCall(
            call_id=1, channel_id="khhf-1-00ff", task_id=1, desk_extension="8001",
            customer_number="13812345678", unified_number=unified,
            recording_file="2026/11/27/1.wav"))
    digits = "".join(c for c in typed if c.isdigit())
    if stored is None:
        # refused in Chinese, saying what a unified number is
        html = response.get_data(as_text=True)
        assert f"{typed} 不是有效的统一号码：请填写以 13 至 19 开头的 11 位号码" in html
        with pytest.raises(OriginateError):
            originate(digits)
    else:
        assert response.status_code == 302 and stored == digits[-11:]
        originate(stored)   # the number the form took is one the bridge dials with


def test_county_with_unified_numbers(web):
    app, seeded = web
    admin = _client(app, seeded, "admin")
    response = _post(admin, "/admin/counties/new", {
        "code": "anji", "name": "安吉县", "fallback_strategy": "hunt",
        "numbers": "13900000011\n13900000012", "primary": "13900000012"})
    assert response.status_code == 302
    with session_for(app) as s:
        county = s.scalar(select(County).where(County.code == "anji"))
        assert county.primary_number == "13900000012" and len(county.unified_numbers) == 2
        county_id = county.id
    # edit: drop one number, make the other primary
    response = _post(admin, f"/admin/counties/{county_id}", {
        "code": "anji", "name": "安吉县", "fallback_strategy": "ringall",
        "numbers": "13900000011", "primary": ""})
    assert response.status_code == 302
    with session_for(app) as s:
        assert s.get(County, county_id).primary_number == "13900000011"
        assert s.scalar(select(func.count()).select_from(UnifiedNumber)) == 2
    # refused: the demo county's number, a short number, a primary not in the list
    response = _post(admin, "/admin/counties/new", {
        "code": "demo", "name": "", "fallback_strategy": "ringall",
        "numbers": "13900000000 12345", "primary": "13900000099"})
    html = response.get_data(as_text=True)
    for message in ("代码 demo 已被其他县区使用", "请填写县区名称", "13900000000 已属于其他县区",
                    "12345 不是有效的统一号码", "主号码必须是该县区的统一号码之一"):
        assert message in html, message
    # delete: refused while the demo county has people, done for the empty one
    demo_id = seeded["county"]["id"]
    response = admin.post(f"/admin/counties/{demo_id}/delete", data={
        "csrf_token": csrf_token(admin, "/admin/counties")}, follow_redirects=True)
    assert "仍有用户、客户或批次" in response.get_data(as_text=True)
    response = admin.post(f"/admin/counties/{county_id}/delete", data={
        "csrf_token": csrf_token(admin, "/admin/counties")}, follow_redirects=True)
    assert "已删除县区" in response.get_data(as_text=True)
    assert _count(app, County) == 1 and _count(app, UnifiedNumber) == 1
    actions = [a for (a,) in session_for(app).execute(
        select(AuditLog.action).where(AuditLog.object_type == "county",
                                      AuditLog.username == "admin"))]
    assert actions == ["create", "update", "delete"]


def test_users_create_edit_password(web):
    app, seeded = web
    admin = _client(app, seeded, "admin")
    response = _post(admin, "/admin/users/new", {
        "username": "Qian", "display_name": "钱主任", "password": "long-enough",
        "role": "supervisor", "county_id": str(seeded["county"]["id"])})
    assert response.status_code == 302
    uid = session_for(app).scalar(select(User.id).where(User.username == "qian"))
    # a supervisor needs a county; a manager is not made here
    html = _post(admin, "/admin/users/new", {
        "username": "sun", "display_name": "孙", "password": "long-enough",
        "role": "supervisor", "county_id": ""}).get_data(as_text=True)
    assert "请选择此人所属的县区" in html
    html = _post(admin, "/admin/users/new", {
        "username": "sun", "display_name": "孙", "password": "long-enough",
        "role": "manager", "county_id": str(seeded["county"]["id"])}).get_data(as_text=True)
    assert "客户经理请在“客户经理”页面新增" in html
    # edit and disable; the admin cannot disable themself
    assert _post(admin, f"/admin/users/{uid}", {
        "display_name": "钱主任", "role": "supervisor",
        "county_id": str(seeded["county"]["id"])}).status_code == 302
    assert session_for(app).get(User, uid).is_active is False
    admin_id = session_for(app).scalar(select(User.id).where(User.username == "admin"))
    html = _post(admin, f"/admin/users/{admin_id}", {
        "display_name": "系统管理员", "role": "admin", "county_id": ""}).get_data(as_text=True)
    assert "不能停用自己的账号" in html
    response = admin.post(f"/admin/users/{uid}/password", data={
        "password": "another-pass", "csrf_token": csrf_token(admin, f"/admin/users/{uid}")})
    assert response.status_code == 302
    entry = session_for(app).scalar(select(AuditLog).where(AuditLog.action == "set_password")
                                    .order_by(AuditLog.id.desc()))
    assert entry.object_id == str(uid) and "another-pass" not in entry.detail


def test_audit_log_search(web):
    app, seeded = web
    log_in(app.test_client(), "manager1", "wrong-password")
    admin = _client(app, seeded, "admin")
    html = admin.get("/audit/?action=login_failed").get_data(as_text=True)
    assert "manager1" in html and "张伟 登录失败：密码错误。" in html
    html = admin.get("/audit/?q=manager3&action=login").get_data(as_text=True)
    assert "共 0 条" in html
    html = admin.get("/audit/?q=admin&action=login&since=2000-01-01&until=2999-12-31")
    assert "共 1 条" in html.get_data(as_text=True)
    assert "共 0 条" in admin.get("/audit/?until=2000-01-01").get_data(as_text=True)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def web_on(request, tmp_path):
    """The app with the demo data on SQLite or on PostgreSQL."""
    if request.param == "sqlite":
        yield make_app(tmp_path)
        return
    from khhf import config, db
    from simkit import seed as demo
    from webui import create_app
    engine = request.getfixturevalue("pg_database")("audit")
    db.create_schema(engine)
    with db.unit_of_work(db.session_factory(engine)) as session:
        seeded = demo.seed(session)
    settings = config.write_new(tmp_path / "khhf.conf", home=tmp_path,
                                database_url=engine.url.render_as_string(hide_password=False))
    app = create_app(settings, {"TESTING": True})
    yield app, seeded
    # the app's own pool, before pg_database drops the database
    app.extensions["khhf_sessions"].kw["bind"].dispose()


def test_audit_log_reads_as_sentences_and_is_found_by_a_persons_name(web_on):
    """What was done by 李娜 and to her, found by her name, said in words:
    on SQLite and on PostgreSQL."""
    app, seeded = web_on
    admin = _client(app, seeded, "admin")
    manager3 = seeded["managers"]["manager3"]["id"]
    _client(app, seeded, "manager3")  # 李娜 logs in
    response = _post(admin, f"/admin/managers/{manager3}", {
        "display_name": "李娜", "county_id": str(seeded["county"]["id"]), "employee_no": "D003",
        "desk_extension": "8003", "mobile": "13800138003", "status": "departed"})
    assert response.status_code == 302
    html = admin.get("/audit/?q=李娜").get_data(as_text=True)
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))
    assert "李娜 登录了系统。" in text
    assert ("系统管理员 将客户经理 李娜设为已离职；客户移交给：张伟（2 个）；王芳（1 个）；"
            "未完成任务移交给：张伟（2 个）；王芳（1 个）。") in text, text
    assert "系统管理员 修改了客户经理 李娜：状态由“在职”改为“离职”。" in text
    # the demo seed made her: the system did
    assert ("系统 新增了客户经理 李娜：用户名 manager3；县区 示范县；工号 D003；座机分机号 8003；"
            "手机号 138****8003。") in text
    for raw in ("status", "departed", "manager #", "username=", "county=demo"):
        assert raw not in text, raw
    # found by the person's name only: nobody else's entries
    assert "王芳 登录了系统" not in text
    # in English, the same entry reads in English
    text = admin.get("/audit/?q=李娜&lang=en").get_data(as_text=True)
    assert "changed customer manager 李娜: Status from Active to Departed." in text


def test_times_are_shown_in_shanghai(web):
    app, seeded = web
    import datetime as dt
    with session_for(app) as s:
        s.add(AuditLog(action="update", username="clock", detail="tz-probe",
                       at=dt.datetime(2026, 1, 1, 16, 30)))
        s.commit()
    admin = _client(app, seeded, "admin")
    assert "2026-01-02 00:30" in admin.get("/audit/?q=tz-probe").get_data(as_text=True)


def test_manager_home_masks_customer_phones(web):
    app, seeded = web
    html = _client(app, seeded, "manager1").get("/manager/").get_data(as_text=True)
    assert "137****0001" in html and "13700000001" not in html


def test_mask_phone():
    assert mask_phone("13812345678") == "138****5678"
    assert mask_phone("01012345678") == "010****5678"
    assert mask_phone("12345") == "*2345"
    assert mask_phone("") == "" and mask_phone(None) == ""


def test_demo_seed_is_idempotent_and_rotates_passwords(web):
    app, seeded = web
    from simkit import seed as demo
    with session_for(app) as s:
        again = demo.seed(s)
        s.commit()
    assert again["county"] == seeded["county"] and again["managers"] == seeded["managers"]
    assert again["passwords"]["admin"] != seeded["passwords"]["admin"]
    assert _count(app, User) == 5 and _count(app, County) == 1
    assert [m["desk_extension"] for m in again["managers"].values()] == ["8001", "8002", "8003"]
    assert log_in(app.test_client(), "admin", again["passwords"]["admin"]).status_code == 302


def test_audit_log_is_found_by_the_address_label_it_shows(web):
    """An entry done from the command line shows 命令行 as its address; typing
    what the page shows finds it (and only such entries)."""
    app, seeded = web
    from khhf import audit
    with session_for(app) as s:
        s.add(AuditLog(action="update", username="cli-probe", detail="cli-probe",
                       ip=audit.CLI_ADDRESS))
        s.commit()
    admin = _client(app, seeded, "admin")
    html = admin.get("/audit/?q=命令行").get_data(as_text=True)
    assert "cli-probe" in html and "共 1 条" in html
    assert "共 0 条" in admin.get("/audit/?q=命令行&action=login").get_data(as_text=True)
    # in English the English label finds it
    assert "cli-probe" in admin.get("/audit/?q=command%20line&lang=en").get_data(as_text=True)
