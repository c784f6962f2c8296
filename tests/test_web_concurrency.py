"""The web UI's writes while the AMI bridge writes: no "database is locked".

On SQLite a unit of work that reads and then writes fails at once with
"database is locked" if another connection committed in between (it cannot
upgrade its read snapshot), whatever the busy timeout. The bridge commits
call events all the time while calls are in progress, so every web write
begins as a writer (webui.db.writing). Here the real
Bridge.apply_ami stores synthetic AMI events for three calls in a loop,
while users log in, toggle their duty and log out, and an administrator
saves forms, all at once, through waitress on a free loopback port (as
`khhf demo run` serves the UI). No request may fail.
"""

import http.cookiejar
import itertools
import re
import sqlite3
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest
from sqlalchemy import func, select

from ami_bridge.bridge import Bridge
from khhf import config
from khhf.models import AuditLog, Call, CallEvent, Manager, Task, User
from simkit.browser import serve
from simkit.web import csrf_token, log_in, make_app, session_for

USERS = ("manager1", "manager2", "manager3", "supervisor")
LOG_INS_EACH = 6


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


class Browser:
    """A cookie-keeping HTTP client that does not follow redirects."""

    def __init__(self, base):
        self.base = base
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), _NoRedirect())

    def open(self, path, data=None):
        body = urllib.parse.urlencode(data).encode() if data is not None else None
        try:
            with self.opener.open(self.base + path, body, timeout=60) as response:
                return response.status, response.headers, response.read().decode()
        except urllib.error.HTTPError as error:
            with error:
                return error.code, error.headers, error.read().decode()

    def post(self, path, data, token_from=None):
        """Open the form's page for its CSRF token, then post; a page that
        fails to open is the answer."""
        page = self.open(token_from or path)
        if page[0] != 200:
            return page
        token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page[2]).group(1)
        return self.open(path, {**data, "csrf_token": token})


class BridgeWriter(threading.Thread):
    """The real bridge's unit of work (Bridge.apply_ami), applied in a loop
    to three calls in progress: Newchannel and ringing events for their legs."""

    def __init__(self, app, tmp_path):
        super().__init__(daemon=True)
        settings = config.load(environ={}, home=tmp_path,
                               database_url=app.config["DATABASE_URL"])
        self.bridge = Bridge(settings, state_dir=tmp_path / "bridge")
        self.linkedids = self._calls_in_progress(app)
        self.stop = threading.Event()
        self.batches = 0
        self.error = None

    @staticmethod
    def _calls_in_progress(app):
        linkedids = []
        with session_for(app) as s:
            for manager in s.scalars(select(Manager).order_by(Manager.id)):
                task = s.scalar(select(Task).where(Task.manager_id == manager.id))
                linkedid = f"khhf-{manager.id}-{uuid.uuid4().hex[:12]}"
                s.add(Call(direction="outbound", task_id=task.id, customer_id=task.customer_id,
                           manager_id=manager.id, county_id=manager.county_id,
                           customer_number=task.customer.phone, state="manager_ringing",
                           uniqueid=linkedid, linkedid=linkedid))
                linkedids.append(linkedid)
            s.commit()
        return linkedids

    def run(self):
        stamp = time.time()
        try:
            for n in itertools.count():
                if self.stop.is_set():
                    return
                stamp += 0.001
                events = [{"Event": "Newchannel" if n % 2 else "Newstate",
                           "ChannelStateDesc": "Ringing", "Channel": f"PJSIP/800{i}-{n:08x}",
                           "Uniqueid": f"{linkedid}.{n}", "Linkedid": linkedid,
                           "Timestamp": f"{stamp:.6f}"}
                          for i, linkedid in enumerate(self.linkedids)]
                self.bridge.apply_ami(events)
                self.batches += 1
                # the next events arrive: the AMI stream is continuous, not a
                # tight loop that would hold SQLite's one write lock for good
                time.sleep(0.005)
        except Exception as error:  # reported by the test
            self.error = error


@pytest.fixture
def served(tmp_path):
    app, seeded = make_app(tmp_path)
    with serve(app) as base:  # waitress, 8 threads, as production
        yield app, seeded, base


def test_log_ins_and_form_posts_while_the_bridge_writes(served, tmp_path):
    app, seeded, base = served
    passwords = seeded["passwords"]
    with session_for(app) as s:
        managers = dict(s.execute(select(User.username, Manager.id).join(Manager.user)).all())
        supervisor_id = s.scalar(select(User.id).where(User.username == "supervisor"))
        county_id = s.scalar(select(User.county_id).where(User.username == "supervisor"))
    failures = []

    def check(what, response, expected):
        status, headers, body = response
        if status != expected:
            failures.append(f"{what}: {status} {headers.get('Location', '')} {body[:300]!r}")
        return status == expected

    def user(username):
        for n in range(LOG_INS_EACH):
            browser = Browser(base)
            if not check(f"{username} log-in {n}", browser.post(
                    "/login", {"username": username, "password": passwords[username]}), 302):
                continue
            if username in managers:
                manager_id = managers[username]
                check(f"{username} duty {n}", browser.post(
                    f"/manager/{manager_id}/duty", {"on_duty": str(n % 2)},
                    token_from=f"/manager/{manager_id}"), 302)
            check(f"{username} log-out {n}",
                  browser.post("/logout", {}, token_from=_home_of(browser)), 302)

    def _home_of(browser):
        status, headers, _ = browser.open("/")
        return headers["Location"] if status == 302 else "/"

    def admin():
        browser = Browser(base)
        check("admin log-in", browser.post(
            "/login", {"username": "admin", "password": passwords["admin"]}), 302)
        for n in range(LOG_INS_EACH * 2):
            check(f"admin form {n}", browser.post(f"/admin/users/{supervisor_id}", {
                "display_name": f"赵县长{n}", "role": "supervisor", "county_id": str(county_id),
                "is_active": "y"}), 302)

    writer = BridgeWriter(app, tmp_path)
    writer.start()
    try:
        threads = [threading.Thread(target=user, args=(name,)) for name in USERS]
        threads.append(threading.Thread(target=admin))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
    finally:
        writer.stop.set()
        writer.join(30)
    assert writer.error is None, writer.error
    assert writer.batches > 0
    assert not failures, "\n".join(failures)
    with session_for(app) as s:
        for username in USERS:
            assert s.scalar(select(func.count()).select_from(AuditLog).where(
                AuditLog.username == username, AuditLog.action == "login")) == LOG_INS_EACH
        assert s.scalar(select(func.count()).select_from(CallEvent)) >= writer.batches


def test_a_write_lock_held_past_the_busy_timeout_is_a_503_and_reads_go_on(tmp_path):
    """Another process holds SQLite's write lock for longer than the busy
    timeout (10 s): a form post says "busy, nothing saved" (503) instead of
    crashing, and pages that only read are served meanwhile."""
    app, seeded = make_app(tmp_path)
    admin = app.test_client()
    assert log_in(admin, "admin", seeded["passwords"]["admin"]).status_code == 302
    token = csrf_token(admin, "/admin/")
    with session_for(app) as s:
        supervisor = s.scalar(select(User).where(User.username == "supervisor"))
    form = {"display_name": "钱县长", "role": "supervisor",
            "county_id": str(supervisor.county_id), "is_active": "y", "csrf_token": token}
    holder = sqlite3.connect(app.config["DATABASE_URL"].split("///", 1)[1],
                             isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        assert admin.get("/admin/users").status_code == 200  # WAL: readers go on
        response = admin.post(f"/admin/users/{supervisor.id}", data=form)
        assert response.status_code == 503
        assert "系统繁忙，本次操作未保存" in response.get_data(as_text=True)
        holder.execute("ROLLBACK")
    finally:
        holder.close()
    with session_for(app) as s:
        assert s.get(User, supervisor.id).display_name == "赵县长"
    assert admin.post(f"/admin/users/{supervisor.id}", data=form).status_code == 302
    with session_for(app) as s:
        assert s.get(User, supervisor.id).display_name == "钱县长"
