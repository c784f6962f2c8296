"""Log-in, log-out, rate limiting, session expiry, CSRF, language."""

import datetime as dt

import pytest
from sqlalchemy import select

from khhf.models import AuditLog, User
from simkit.web import csrf_token, log_in, make_app, session_for


@pytest.fixture
def web(tmp_path):
    app, seeded = make_app(tmp_path, {"login_max_failures": 3})
    return app, seeded["passwords"]


def _actions(app, username):
    with session_for(app) as s:
        return s.scalars(select(AuditLog.action).where(AuditLog.username == username)
                         .order_by(AuditLog.id)).all()


@pytest.mark.parametrize("username, home, text", [
    ("admin", "/admin/", "系统管理"),
    ("supervisor", "/county/", "示范县"),
    ("manager1", "/manager/", "我的任务"),
])
def test_each_role_logs_in_and_lands_home(web, username, home, text):
    app, passwords = web
    client = app.test_client()
    response = log_in(client, username, passwords[username])
    assert response.status_code == 302 and response.location == "/"
    response = client.get("/", follow_redirects=True)
    assert response.request.path == home
    assert text in response.get_data(as_text=True)
    assert _actions(app, username)[-1] == "login"
    with session_for(app) as s:
        assert s.scalar(select(User.last_login_at).where(User.username == username))


def test_wrong_password_is_refused_and_logged(web):
    app, _ = web
    client = app.test_client()
    response = log_in(client, "manager1", "not-the-password")
    assert response.status_code == 401
    assert "用户名或密码错误" in response.get_data(as_text=True)
    response = log_in(client, "nosuchuser", "whatever1")
    assert response.status_code == 401
    assert _actions(app, "manager1")[-1] == "login_failed"
    assert _actions(app, "nosuchuser") == ["login_failed"]
    assert client.get("/manager/").status_code == 302


def test_log_in_is_rate_limited_per_user_name_and_address(web):
    app, passwords = web
    client = app.test_client()
    for _ in range(3):
        assert log_in(client, "manager1", "wrong-password").status_code == 401
    response = log_in(client, "manager1", passwords["manager1"])
    assert response.status_code == 429
    assert "登录失败次数过多" in response.get_data(as_text=True)
    assert _actions(app, "manager1")[-1] == "login_refused"
    # another user from the same address is not affected
    assert log_in(app.test_client(), "manager2", passwords["manager2"]).status_code == 302
    # the window passes: failures older than login_failure_minutes do not count
    with session_for(app) as s:
        for entry in s.scalars(select(AuditLog).where(AuditLog.username == "manager1")):
            entry.at -= dt.timedelta(minutes=16)
        s.commit()
    assert log_in(app.test_client(), "manager1", passwords["manager1"]).status_code == 302


def test_disabled_and_departed_users_cannot_log_in(web):
    app, passwords = web
    with session_for(app) as s:
        s.scalar(select(User).where(User.username == "supervisor")).is_active = False
        s.commit()
    response = log_in(app.test_client(), "supervisor", passwords["supervisor"])
    assert response.status_code == 401
    assert "该账号已停用" in response.get_data(as_text=True)


def test_session_expires_after_configured_hours(web):
    app, passwords = web
    client = app.test_client()
    log_in(client, "admin", passwords["admin"])
    assert client.get("/admin/").status_code == 200
    with client.session_transaction() as sess:
        sess["login_at"] -= app.config["SESSION_HOURS"] * 3600 + 1
    response = client.get("/admin/")
    assert response.status_code == 302 and response.location.startswith("/login")
    assert "登录已过期" in client.get(response.location).get_data(as_text=True)
    assert client.get("/admin/").status_code == 302
    assert app.permanent_session_lifetime == dt.timedelta(hours=8)


def test_logout_needs_post_and_is_logged(web):
    app, passwords = web
    client = app.test_client()
    log_in(client, "admin", passwords["admin"])
    assert client.get("/logout").status_code == 405
    token = csrf_token(client, "/admin/")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert client.get("/admin/").status_code == 302
    assert _actions(app, "admin")[-1] == "logout"


def test_state_changing_requests_need_the_csrf_token(web):
    app, passwords = web
    client = app.test_client()
    assert client.post("/login", data={"username": "admin",
                                       "password": passwords["admin"]}).status_code == 400
    log_in(client, "admin", passwords["admin"])
    response = client.post("/admin/counties/new", data={"code": "x", "name": "X县"})
    assert response.status_code == 400
    assert "安全令牌" in response.get_data(as_text=True)


def test_next_only_redirects_within_the_site(web):
    app, passwords = web
    client = app.test_client()
    token = csrf_token(client, "/login")
    response = client.post("/login?next=//evil.example/", data={
        "username": "admin", "password": passwords["admin"], "csrf_token": token})
    assert response.location == "/"
    client = app.test_client()
    token = csrf_token(client, "/login")
    response = client.post("/login?next=/audit/", data={
        "username": "admin", "password": passwords["admin"], "csrf_token": token})
    assert response.location == "/audit/"


def test_english_on_request_chinese_by_default(web):
    app, _ = web
    client = app.test_client()
    assert "用户名" in client.get("/login").get_data(as_text=True)
    assert "User name" in client.get("/login?lang=en").get_data(as_text=True)
    # remembered for the session
    assert "User name" in client.get("/login").get_data(as_text=True)
    assert "用户名" in client.get("/login?lang=zh").get_data(as_text=True)
