"""Sessions end on the server (webui.security), cookies and headers protect
the browser, and the production server (python -m webui, waitress) names
no product."""

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from sqlalchemy import select

from khhf import config, db
from khhf.models import Manager, User
from simkit.harness import free_port
from simkit.web import csrf_token, log_in, make_app, session_for
from webui.security import CONTENT_SECURITY_POLICY

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def web(tmp_path):
    return make_app(tmp_path)


def _logged_in(app, seeded, username, **client_args):
    client = app.test_client(**client_args)
    assert log_in(client, username, seeded["passwords"][username]).status_code == 302
    return client


def _copy(app, client):
    """A second client holding a copy of `client`'s session cookie, as an
    attacker who saved it would."""
    cookie = client.get_cookie("session")
    thief = app.test_client()
    thief.set_cookie("session", cookie.value)
    return thief


def _admin_post(app, seeded, path, data):
    admin = _logged_in(app, seeded, "admin")
    return admin.post(path, data={**data, "csrf_token": csrf_token(admin, "/admin/")})


def test_a_saved_cookie_does_not_work_after_log_out(web):
    app, seeded = web
    client = _logged_in(app, seeded, "admin")
    thief = _copy(app, client)
    other_device = _logged_in(app, seeded, "admin")
    assert thief.get("/admin/").status_code == 200
    response = client.post("/logout", data={"csrf_token": csrf_token(client, "/admin/")})
    assert response.status_code == 302
    for stale in (thief, client, other_device):
        response = stale.get("/admin/")
        assert response.status_code == 302 and response.location.startswith("/login")
    # a new log-in works as before
    assert _logged_in(app, seeded, "admin").get("/admin/").status_code == 200


def test_a_new_password_ends_every_session_of_that_user(web):
    app, seeded = web
    manager = _logged_in(app, seeded, "manager1")
    thief = _copy(app, manager)
    with session_for(app) as s:
        uid = s.scalar(select(User.id).where(User.username == "manager1"))
    assert _admin_post(app, seeded, f"/admin/users/{uid}/password",
                       {"password": "brand-new-pass"}).status_code == 302
    assert manager.get("/manager/").status_code == 302
    assert thief.get("/manager/").status_code == 302
    again = app.test_client()
    assert log_in(again, "manager1", "brand-new-pass").status_code == 302
    assert again.get("/manager/").status_code == 200


def test_ones_own_new_password_keeps_this_session_and_ends_the_others(web):
    app, seeded = web
    admin = _logged_in(app, seeded, "admin")
    elsewhere = _logged_in(app, seeded, "admin")
    with session_for(app) as s:
        uid = s.scalar(select(User.id).where(User.username == "admin"))
    response = admin.post(f"/admin/users/{uid}/password", data={
        "password": "my-new-secret", "csrf_token": csrf_token(admin, "/admin/")})
    assert response.status_code == 302
    assert admin.get("/admin/").status_code == 200
    assert elsewhere.get("/admin/").status_code == 302


def test_disabling_ends_the_session_and_enabling_does_not_revive_it(web):
    app, seeded = web
    supervisor = _logged_in(app, seeded, "supervisor")
    with session_for(app) as s:
        user = s.scalar(select(User).where(User.username == "supervisor"))
        uid, county_id = user.id, user.county_id
    form = {"display_name": "赵县长", "role": "supervisor", "county_id": str(county_id)}
    assert _admin_post(app, seeded, f"/admin/users/{uid}", form).status_code == 302
    assert supervisor.get("/county/").status_code == 302
    assert _admin_post(app, seeded, f"/admin/users/{uid}",
                       {**form, "is_active": "y"}).status_code == 302
    with session_for(app) as s:
        assert s.get(User, uid).is_active
    assert supervisor.get("/county/").status_code == 302
    assert _logged_in(app, seeded, "supervisor").get("/county/").status_code == 200


def test_a_departed_manager_brought_back_needs_to_log_in_again(web):
    app, seeded = web
    manager = _logged_in(app, seeded, "manager3")
    manager_id = seeded["managers"]["manager3"]["id"]
    fields = {"display_name": "李娜", "county_id": str(seeded["county"]["id"]),
              "employee_no": "D003", "desk_extension": "8003", "mobile": "13800138003"}
    assert _admin_post(app, seeded, f"/admin/managers/{manager_id}",
                       {**fields, "status": "departed"}).status_code == 302
    assert _admin_post(app, seeded, f"/admin/managers/{manager_id}",
                       {**fields, "status": "active"}).status_code == 302
    with session_for(app) as s:
        assert s.get(Manager, manager_id).user.is_active
    assert manager.get("/manager/").status_code == 302


def _set_cookie(response):
    [cookie] = [v for k, v in response.headers.items()
                if k == "Set-Cookie" and v.startswith("session=")]
    return {part.strip().split("=")[0].lower(): part.strip() for part in cookie.split(";")}


@pytest.mark.parametrize("base_url, hops, forwarded, secure", [
    ("http://localhost", 0, None, False),
    ("https://localhost", 0, None, True),
    # behind one trusted proxy that terminated HTTPS
    ("http://localhost", 1, "https", True),
    ("http://localhost", 1, "http", False),
    # nobody is trusted to say "https" when no proxy is configured
    ("http://localhost", 0, "https", False),
])
def test_session_cookie_flags(tmp_path, base_url, hops, forwarded, secure):
    app, seeded = make_app(tmp_path, {"web_proxy_hops": hops})
    client = app.test_client()
    headers = {"X-Forwarded-Proto": forwarded} if forwarded else {}
    response = client.get("/login", base_url=base_url, headers=headers)
    flags = _set_cookie(response)
    assert "httponly" in flags and flags["samesite"] == "SameSite=Lax"
    assert ("secure" in flags) is secure
    assert ("Strict-Transport-Security" in response.headers) is secure


EXPECTED_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


def test_every_response_carries_the_protections(web):
    app, seeded = web
    client = _logged_in(app, seeded, "admin")
    paths = [rule.rule for rule in app.url_map.iter_rules()
             if "GET" in rule.methods and "<" not in rule.rule]
    paths += ["/static/khhf.css", "/no/such/page", "/admin/users/99999", "/calls/1",
              "/audit/?page=0", "/logout"]
    for path in paths:
        with client.get(path) as response:
            for name, value in EXPECTED_HEADERS.items():
                assert response.headers.get(name) == value, (path, name)
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
    assert "Server" not in app.test_client().get("/login").headers


def test_the_served_ui_names_no_product(tmp_path):
    """`python -m webui` as deployed: no Server banner, the protections on."""
    port = free_port()
    path = tmp_path / "khhf.conf"
    settings = config.write_new(path, home=tmp_path, web_port=port)
    db.create_schema(db.make_engine(settings.database_url))
    env = {**os.environ, "KHHF_CONFIG": str(path), "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "webui"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        response = None
        for _ in range(200):
            try:
                response = urllib.request.urlopen(f"http://127.0.0.1:{port}/login", timeout=5)
                break
            except OSError:
                assert proc.poll() is None, proc.stdout.read().decode()
                time.sleep(0.1)
        assert response is not None, "the web UI did not answer"
        with response:
            headers = response.headers
            assert response.status == 200
        assert "Server" not in headers, headers["Server"]
        assert "waitress" not in str(headers).lower() and "khhf" not in str(headers).lower()
        for name, value in EXPECTED_HEADERS.items():
            assert headers[name] == value, name
    finally:
        proc.terminate()
        proc.wait(10)
        proc.stdout.close()
