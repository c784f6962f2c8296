"""Redirects whose target comes from the request go to this site's own
paths only (webui.redirects): the log-in's `next` and the dial's way back
to the page it was clicked on (the Referer)."""

import pytest
from sqlalchemy import select

from khhf.models import Manager, Task, User
from simkit.harness import free_port
from simkit.web import csrf_token, log_in_as, make_app, session_for
from webui.redirects import local_path

# every one of these is, to some browser, another site (or script)
FOREIGN = [
    "//evil.example", "//evil.example/", "///evil.example", "////evil.example",
    "/\t/evil.example", "/\n/evil.example", "/\r\n/evil.example", "\t//evil.example",
    " //evil.example", "/ /evil.example", "/\x00/evil.example", "/\x0b/evil.example",
    "/\x7f/evil.example", "/\u200b/evil.example", "/\u00a0/evil.example",
    "/\u2028/evil.example", "/\ufeff/evil.example",
    "/\\evil.example", "\\\\evil.example", "/\\/evil.example", "\\/evil.example",
    "%2F%2Fevil.example", "/%2Fevil.example", "/%2F/evil.example", "/%09/evil.example",
    "/%0a/evil.example", "/%5Cevil.example", "/%5C/evil.example", "/%252F/evil.example",
    "/%25252F/evil.example", "%2f%2fevil.example",
    "http://evil.example/", "https://evil.example", "HTTP://evil.example",
    "http:evil.example", "http:/evil.example", "http:\\\\evil.example",
    "javascript:alert(1)", "JavaScript:alert(1)", " javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>", "evil.example", "audit/", "",
    # a full URL, even to this very host, is not a path: refused too
    "http://localhost/audit/", "http://127.0.0.1/audit/", "//localhost/audit/",
]
OWN = ["/", "/audit/", "/audit/?page=2&q=%E5%BC%A0", "/manager/3", "/admin/users/1?x=//y",
       "/audit/?q=a%20b"]


@pytest.mark.parametrize("target", FOREIGN)
def test_foreign_targets_are_refused(target):
    assert local_path(target) is None


@pytest.mark.parametrize("target", OWN)
def test_own_paths_are_kept(target):
    assert local_path(target) == target


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("redirects")
    # the dial is refused or fails (no bridge listens): either way it redirects
    app, seeded = make_app(tmp, {"calling_window": "00:00-24:00", "bridge_port": free_port()})
    app.seeded = seeded
    return app


def _log_in_with_next(app, target):
    client = app.test_client()
    token = csrf_token(client, "/login")
    return client.post("/login", query_string={"next": target}, data={
        "username": "admin", "password": app.seeded["passwords"]["admin"],
        "csrf_token": token})


@pytest.mark.parametrize("target", FOREIGN)
def test_log_in_never_sends_elsewhere(app, target):
    response = _log_in_with_next(app, target)
    if "\x00" in target:  # refused outright (webui.params.refuse_nul_characters)
        assert response.status_code == 400
        return
    assert response.status_code == 302
    assert response.location == "/"


@pytest.mark.parametrize("target", OWN)
def test_log_in_goes_on_to_the_page_asked_for(app, target):
    response = _log_in_with_next(app, target)
    assert response.status_code == 302 and response.location == target


def test_the_issue_probe_exactly(app):
    """`next=%2F%09%2Fevil.example` in the raw query string."""
    client = app.test_client()
    token = csrf_token(client, "/login")
    response = client.post("/login?next=%2F%09%2Fevil.example", data={
        "username": "admin", "password": app.seeded["passwords"]["admin"],
        "csrf_token": token})
    assert response.location == "/"


def _dial_with_referrer(app, referrer):
    with session_for(app) as s:
        task_id = s.scalar(select(Task.id).join(Manager, Task.manager_id == Manager.id)
                           .join(User, Manager.user_id == User.id)
                           .where(User.username == "manager1").order_by(Task.id))
    client = app.test_client()
    log_in_as(client, app, "manager1")
    token = csrf_token(client, "/manager/")
    headers = {"Referer": referrer} if referrer is not None else {}
    response = client.post(f"/calls/dial/{task_id}", data={"csrf_token": token},
                           headers=headers)
    return response


@pytest.mark.parametrize("referrer", [
    "http://evil.example/", "https://evil.example/manager/", "//evil.example/",
    "http://localhost.evil.example/manager/", "http://evil.example@localhost/x",
    "https://localhost/manager/",  # another scheme: not this site as served
    "http://localhost/\t/evil.example", "http://localhost//evil.example",
    "javascript:alert(1)", "garbage", "", None])
def test_dial_does_not_follow_a_foreign_referrer(app, referrer):
    response = _dial_with_referrer(app, referrer)
    assert response.status_code == 302
    assert response.location == "/manager/"


def test_dial_goes_back_to_the_page_it_came_from(app):
    with session_for(app) as s:
        manager_id = s.scalar(select(Manager.id).join(User, Manager.user_id == User.id)
                              .where(User.username == "manager1"))
    response = _dial_with_referrer(app, f"http://localhost/manager/{manager_id}?x=1")
    assert response.status_code == 302
    assert response.location == f"/manager/{manager_id}?x=1"
