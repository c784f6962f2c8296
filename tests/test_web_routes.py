"""Every route, as nobody and as each role, against the one access table:
the rules the views declare with webui.access.allow / public.

A new route without a rule fails here (and is refused at run time)."""

import pytest
from sqlalchemy import event, inspect, select, text

from khhf.models import ROLES, Call, County, Manager, Task, User
from khhf.services import accounts
from simkit.web import log_in_as, make_app, session_for
from webui.access import API, PUBLIC, access_rule

AS = {"admin": "admin", "supervisor": "supervisor", "manager": "manager1"}


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    app, _ = make_app(tmp_path_factory.mktemp("routes"), WTF_CSRF_ENABLED=False)
    return app


def _routes(app):
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if rule.endpoint == "static":
            continue
        method = "GET" if "GET" in rule.methods else "POST"
        yield rule, method


def _dnc_entry(s) -> int:
    """An entry of the do-not-call register (made if the walk removed it)."""
    from khhf.models import DncChannel, DncEntry
    from khhf.services import dnc
    entry = s.scalar(select(DncEntry).order_by(DncEntry.id))
    if entry is None:
        entry = dnc.add(s, None, "", "13800138999", channel=DncChannel.MANUAL, reason="walk")
        s.commit()
    return entry.id


def _url(app, rule):
    """The rule with its ids filled in by objects that manager1 owns, so a
    role the rule admits always gets the page."""
    with session_for(app) as s:
        manager = s.scalar(select(Manager).join(User).where(User.username == "manager1"))
        task, call = _task_and_call(s, manager, app.extensions["khhf_settings"].recordings_dir)
        values = {"manager_id": manager.id, "user_id": manager.user_id,
                  "county_id": manager.county_id, "task_id": task.id, "call_id": call.id,
                  "campaign_id": task.campaign_id, "type_id": task.task_type_id,
                  "customer_id": task.customer_id, "job_id": _import_job(app, s, manager),
                  "kind": "customers", "fmt": "csv", "client_id": _api_client(s),
                  "entry_id": _dnc_entry(s)}
    missing = set(rule.arguments) - set(values)
    assert not missing, f"{rule.rule}: add sample values for {missing} to this test"
    with app.test_request_context():
        from flask import url_for
        return url_for(rule.endpoint, **{k: values[k] for k in rule.arguments})


def _task_and_call(s, manager, recordings_dir):
    """A task of manager1's (the demo seeds them) and a call on it (made
    once), recorded: the recording's routes have a file to serve."""
    from simkit.factories import recorded_call
    task = s.scalar(select(Task).where(Task.manager_id == manager.id).order_by(Task.id))
    call = s.scalar(select(Call).where(Call.task_id == task.id))
    if call is None:
        call = recorded_call(s, recordings_dir, manager, task.customer, task_=task)
        s.commit()
    return task, call


def _api_client(s):
    """An integration API client (the admin's API page revokes it)."""
    from khhf.models import ApiClient
    from khhf.services import api_clients
    client = s.scalar(select(ApiClient).order_by(ApiClient.id))
    if client is None:
        client, _ = api_clients.create(s, None, "", name="walk", county_code="demo")
        s.commit()
    return client.id


def _import_job(app, s, manager):
    """An import job of manager1's county, checked (so it has a report)."""
    import io
    from pathlib import Path

    from khhf.models import ImportJob
    from khhf.services import import_jobs, imports
    job = s.scalar(select(ImportJob).order_by(ImportJob.id))
    if job is None:
        root = Path(app.extensions["khhf_settings"].home) / "imports"
        data = "姓名,手机号码\n甲,13811110000\n乙,not-a-number\n".encode("gb18030")
        job = import_jobs.create(s, None, "customers", "a.csv", io.BytesIO(data), root,
                                 imports.Options(county_code=manager.county.code),
                                 county_id=manager.county_id)
        s.commit()
        import_jobs.start(app.extensions["khhf_sessions"], job.id, root, wait=True)
    return job.id


def test_every_route_has_an_access_rule(app):
    unruled = [rule.endpoint for rule in app.url_map.iter_rules()
               if access_rule(app, rule.endpoint) is None]
    assert not unruled, f"routes without webui.access.allow/public: {unruled}"


def test_static_files_are_served_by_the_app(app):
    with app.test_client().get("/static/vendor/bootstrap-5.3.8/bootstrap.min.css") as response:
        assert response.status_code == 200 and b"Bootstrap" in response.data


@pytest.fixture
def writes(app):
    """The writing SQL statements the app runs (a list, appended to live)."""
    seen = []

    def record(_conn, _cursor, statement, *_args):
        if statement.lstrip().split(None, 1)[0].upper() in ("INSERT", "UPDATE", "DELETE",
                                                            "REPLACE"):
            seen.append(statement)
    engine = app.extensions["khhf_engine"]
    event.listen(engine, "before_cursor_execute", record)
    yield seen
    event.remove(engine, "before_cursor_execute", record)


def _wait_for_import_jobs(app, timeout=60.0):
    """Until no import job's thread runs (a post may start one: commit, mapping)."""
    import time

    from khhf.models import ImportJob
    from khhf.services import import_jobs
    with session_for(app) as s:
        ids = s.scalars(select(ImportJob.id)).all()
    deadline = time.monotonic() + timeout
    while any(import_jobs.is_running(i) for i in ids):
        assert time.monotonic() < deadline, "an import job's thread did not finish"
        time.sleep(0.05)


@pytest.fixture
def database_state(app):
    """A function: every table's row count, and the audit log's last entry,
    in one query (what a write would change, whichever connection made it)."""
    engine = app.extensions["khhf_engine"]
    tables = sorted(inspect(engine).get_table_names())
    assert "audit_log" in tables
    query = text("SELECT " + ", ".join(f"(SELECT count(*) FROM {t})" for t in tables)
                 + ", (SELECT max(id) FROM audit_log)")

    def state() -> dict:
        with engine.connect() as conn:
            return dict(zip([*tables, "audit_log last id"], conn.execute(query).one()))
    return state


@pytest.mark.parametrize("who", [None, *ROLES])
def test_route_walk(app, who, writes, database_state):
    checked = 0
    for rule, method in _routes(app):
        allowed = access_rule(app, rule.endpoint)
        client = app.test_client()
        if who is not None:
            log_in_as(client, app, AS[who])
        url = _url(app, rule)
        writes.clear()
        before = database_state()
        response = client.open(url, method=method)
        response.close()  # a file's response (a recording) holds the file open until closed
        if method == "POST":
            _wait_for_import_jobs(app)  # their threads' writes are not the next GET's
        where = f"{method} {rule.rule} as {who or 'nobody'}"
        if method == "GET":  # a GET only reads (webui.db.writing refuses it)
            assert not writes, (where, writes)
            after = database_state()
            assert after == before, (where, {k: (before[k], v) for k, v in after.items()
                                             if before[k] != v})
        elif rule.endpoint == "auth.logout" and who is not None:
            assert writes, "the recorder sees writes: the log-out's audit entry"
        if allowed == API:
            # the integration API: a bearer token, never the browser's log-in
            assert response.status_code == 401 and not response.headers.get("Set-Cookie"), \
                where
        elif allowed == PUBLIC:
            # /healthz answers 503 here: no daemon runs beside this test app
            ok = (200, 302, 503) if rule.endpoint == "health.healthz" else (200, 302)
            assert response.status_code in ok, where
        elif who is None:
            assert response.status_code == 302, where
            # the phone pages send to their own log-in (webui.mobile)
            login = "/m/login" if rule.endpoint.startswith("mobile.") else "/login"
            assert response.location.startswith(login), where
        elif who in allowed:
            assert response.status_code in (200, 302), where
        else:
            assert response.status_code == 403, where
        checked += 1
    assert checked >= 15


@pytest.fixture(scope="module")
def other_county(app):
    """A second county with its own supervisor and manager."""
    with session_for(app) as s:
        from khhf.services import counties
        county = counties.create_county(s, None, "", code="other", name="邻县",
                                        fallback_strategy="hunt", numbers=["13900000001"],
                                        primary="")
        accounts.create_user(s, None, "", username="supervisor2", display_name="钱主任",
                             password="secret-pass", role="supervisor", county_id=county.id)
        manager = accounts.create_manager(
            s, None, "", username="manager9", display_name="孙经理", password="secret-pass",
            county_id=county.id, employee_no="O009", desk_extension="8009", mobile="")
        from simkit import factories
        customer = factories.customer(s, county, "13900009999", manager)
        s.commit()
        return {"county_id": county.id, "manager_id": manager.id, "customer_id": customer.id}


@pytest.mark.parametrize("who, method, path", [
    ("manager1", "GET", "/customers/{other_customer}"),
    ("manager1", "GET", "/customers/{colleague_customer}"),
    ("supervisor", "GET", "/customers/{other_customer}"),
    ("supervisor", "POST", "/customers/{other_customer}/do-not-call"),
    ("supervisor2", "GET", "/imports/{own_job}"),
    ("manager1", "GET", "/manager/{other_manager}"),
    ("manager1", "POST", "/manager/{other_manager}/duty"),
    ("manager1", "GET", "/manager/{colleague}"),
    ("manager1", "POST", "/manager/{colleague}/duty"),
    ("supervisor", "GET", "/manager/{other_manager}"),
    ("supervisor2", "GET", "/manager/{colleague}"),
])
def test_objects_outside_ones_scope_are_not_found(app, other_county, who, method, path):
    from khhf.models import Customer, ImportJob
    with session_for(app) as s:
        colleague = s.scalar(select(Manager.id).join(User).where(User.username == "manager2"))
        colleague_customer = s.scalar(select(Customer.id).where(Customer.manager_id == colleague))
        assert colleague_customer is not None
        own_job = _import_job(app, s, s.get(Manager, colleague))
        assert s.get(ImportJob, own_job).county_id != other_county["county_id"]
        # what a refused post must leave as it was (the walk above may have set some)
        before = (set(s.scalars(select(Manager.id).where(Manager.on_duty))),
                  set(s.scalars(select(Customer.id).where(Customer.do_not_call))))
    client = app.test_client()
    log_in_as(client, app, who)
    url = path.format(other_manager=other_county["manager_id"], colleague=colleague,
                      other_customer=other_county["customer_id"],
                      colleague_customer=colleague_customer, own_job=own_job)
    response = client.open(url, method=method, data={"on_duty": "1", "do_not_call": "1",
                                                      "reason": "x"})
    assert response.status_code == 404
    with session_for(app) as s:
        after = (set(s.scalars(select(Manager.id).where(Manager.on_duty))),
                 set(s.scalars(select(Customer.id).where(Customer.do_not_call))))
    assert after == before


def test_supervisor_sees_own_county_only(app, other_county):
    client = app.test_client()
    log_in_as(client, app, "supervisor2")
    html = client.get("/county/").get_data(as_text=True)
    assert "邻县" in html and "孙经理" in html
    assert "示范县" not in html and "张伟" not in html
    with session_for(app) as s:
        assert s.get(County, other_county["county_id"]).code == "other"
