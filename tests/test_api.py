"""The integration API over real HTTP, as an outside client sees it: the
web app served by waitress on loopback (simkit.browser.serve), requests
made with urllib, a token made by `khhf api clients add`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import urllib.error
import urllib.request

import pytest
from sqlalchemy import func, select

from khhf import audit, db
from khhf.models import AuditLog, Customer, CustomerAssignment, Manager, Task
from khhf.services import api_clients, counties
from simkit import factories
from simkit.browser import serve
from simkit.web import csrf_token, log_in_as, make_app, session_for


def call(base, method, path, token=None, body=None, headers=None, raw=False):
    """(status, headers, JSON body or bytes) of one request."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, got, payload = response.status, response.headers, response.read()
    except urllib.error.HTTPError as exc:
        status, got, payload = exc.code, exc.headers, exc.read()
    return status, got, payload if raw else (json.loads(payload) if payload else None)


def add_client(tmp_path, name, county, *extra) -> str:
    """A client made by the CLI; its token is the last line of the output."""
    out = subprocess.run([sys.executable, "-m", "khhfcli.main", "--config",
                          str(tmp_path / "khhf.conf"), "api", "clients", "add", name,
                          "--county", county, *extra],
                         capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    app, seeded = make_app(tmp)
    with session_for(app) as s:
        other = counties.create_county(s, None, "", code="other", name="邻县",
                                       fallback_strategy="hunt", numbers=["13900000001"],
                                       primary="")
        factories.manager(s, other, "o9001", employee_no="O9001", desk="9001")
        s.commit()
    with serve(app) as base:
        yield app, seeded, base, tmp


@pytest.fixture(scope="module")
def tokens(site):
    app, seeded, _, tmp = site
    return {"a": add_client(tmp, "crm-a", seeded["county"]["code"],
                            "--operations", "customers:write,managers:write,tasks:write,"
                            "tasks:read,calls:read"),
            "b": add_client(tmp, "crm-b", "other")}


def test_the_token_is_the_last_line_and_only_its_hash_is_kept(site, tokens):
    app = site[0]
    with session_for(app) as s:
        client = api_clients.by_name(s, "crm-a")
        assert tokens["a"].startswith(f"khhf_{client.token_id}_")
        assert client.secret_hash == api_clients.token_hash(tokens["a"])
        assert tokens["a"] not in json.dumps([e.detail for e in s.scalars(select(AuditLog))])


def test_a_10000_customer_batch_upserts_with_its_rejects(site, tokens):
    app, seeded, base, _ = site
    rows = [{"phone": f"1350000{i:04d}", "name": f"客户{i}"} for i in range(10_000)]
    rows[10] = {"phone": "12345", "name": "坏号码"}
    rows[20] = {"phone": "13500000001"}                       # repeats row 1
    rows[30] = {"phone": "13500000030", "manager": "NOBODY"}
    rows[40] = {"phone": "13700000001", "name": "已有客户改名"}  # a demo customer: updated
    status, _, result = call(base, "POST", "/api/v1/customers", tokens["a"], {"rows": rows},
                             headers={"Idempotency-Key": "batch-1"})
    assert status == 200, result
    assert (result["received"], result["accepted"], result["updated"], result["rejected"]) == \
        (10_000, 9_997, 1, 3)
    rejects = {r["index"]: r["problems"][0] for r in result["rejects"]}
    assert rejects[10]["field"] == "phone" and rejects[10]["code"] == "not_a_phone_number"
    assert "手机" in rejects[10]["message"] or "号码" in rejects[10]["message"]
    assert rejects[20]["code"] == "duplicate_of_row_x_in_this_file"
    assert rejects[30]["field"] == "manager"
    with session_for(app) as s:
        assert s.scalar(select(func.count()).select_from(Customer)
                        .where(Customer.phone.like("1350000%"))) == 9_996
        assert s.scalar(select(Customer.name).where(Customer.phone == "13700000001")) == \
            "已有客户改名"
        entries = s.scalars(select(AuditLog).where(AuditLog.action == "api_call")).all()
        assert entries and all("1350000" not in e.detail for e in entries)
        assert audit.load_detail(entries[-1])["accepted"] == 9_997
    # the same key again: the first answer, nothing written twice
    status, headers, again = call(base, "POST", "/api/v1/customers", tokens["a"],
                                  {"rows": rows[:5]}, headers={"Idempotency-Key": "batch-1"})
    assert status == 200 and again == result and headers["Idempotent-Replayed"] == "true"


def test_an_atomic_batch_with_a_reject_writes_nothing(site, tokens):
    app, _, base, _ = site
    rows = [{"phone": "13600000001"}, {"phone": "13600000002", "note": "x"}, {"phone": "bad"}]
    status, _, body = call(base, "POST", "/api/v1/customers", tokens["a"],
                           {"rows": rows, "atomic": True})
    assert status == 422 and body["error"]["field"] == "rows"
    assert body["result"]["rejects"][0]["index"] == 2
    with session_for(app) as s:
        assert s.scalar(select(Customer).where(Customer.phone.like("1360000%"))) is None


@pytest.mark.parametrize("body,field", [
    ({"rows": []}, "rows"),
    ({"rows": [{"phone": "13600000009", "colour": "red"}]}, "rows[0].colour"),
    ({"rows": [{"phone": "13600000009"}], "atomic": "yes"}, "atomic"),
    ("not an object", "body"),
])
def test_bad_input_names_the_field(site, tokens, body, field):
    status, _, answer = call(site[2], "POST", "/api/v1/customers", tokens["a"], body)
    assert 400 <= status < 500 and answer["error"]["field"] == field, answer
    assert answer["error"]["message"] and answer["error"]["code"]


def test_managers_upsert_and_a_campaigns_tasks(site, tokens):
    app, seeded, base, _ = site
    status, _, result = call(base, "POST", "/api/v1/managers", tokens["a"], {"rows": [
        {"employee_no": "A100", "display_name": "新经理", "mobile": "13911110000"},
        {"employee_no": "A101", "display_name": ""},
        {"employee_no": "O9001", "display_name": "别县的"}]})
    assert status == 200 and (result["created"], result["rejected"]) == (1, 2), result
    assert {r["index"] for r in result["rejects"]} == {1, 2}
    campaign = seeded["campaign"]["id"]
    status, _, result = call(base, "POST", f"/api/v1/campaigns/{campaign}/tasks", tokens["a"],
                             {"numbers": ["13500000100", "13500000101", "13999999999"]})
    assert status == 200 and (result["accepted"], result["rejected"]) == (2, 1), result
    with session_for(app) as s:
        assert s.scalar(select(func.count()).select_from(Task).where(
            Task.campaign_id == campaign, Task.customer.has(Customer.phone.in_(
                ["13500000100", "13500000101"])))) == 2
        assert s.scalar(select(Manager).where(Manager.employee_no == "A100")).county_id == \
            seeded["county"]["id"]
    # another county's campaign is no campaign for this token
    status, _, _ = call(base, "POST", f"/api/v1/campaigns/{campaign}/tasks", tokens["b"],
                        {"numbers": ["13500000102"]})
    assert status == 404


def test_a_token_of_one_county_cannot_read_or_write_another(site, tokens):
    app, seeded, base, _ = site
    with session_for(app) as s:
        task_id = s.scalar(select(Task.id).where(Task.campaign_id == seeded["campaign"]["id"]))
    status, _, page = call(base, "GET", "/api/v1/tasks?limit=2", tokens["a"])
    assert status == 200 and len(page["items"]) == 2 and page["next_cursor"]
    status, _, more = call(base, "GET", f"/api/v1/tasks?limit=2&cursor={page['next_cursor']}",
                           tokens["a"])
    assert more["items"][0]["id"] > page["items"][-1]["id"]
    assert call(base, "GET", f"/api/v1/tasks/{task_id}", tokens["a"])[0] == 200
    assert call(base, "GET", f"/api/v1/tasks/{task_id}", tokens["b"])[0] == 404
    assert call(base, "GET", "/api/v1/tasks/999999", tokens["b"])[0] == 404
    status, _, page = call(base, "GET", "/api/v1/tasks", tokens["b"])
    assert status == 200 and page["items"] == []
    # writing a customer of county A with county B's token: refused, A's row untouched
    status, _, result = call(base, "POST", "/api/v1/customers", tokens["b"],
                             {"rows": [{"phone": "13700000002", "name": "抢走"}]})
    assert status == 200 and result["rejected"] == 1
    with session_for(app) as s:
        assert s.scalar(select(Customer.county_id).where(Customer.phone == "13700000002")) == \
            seeded["county"]["id"]


def test_401_403_and_a_revoked_token_stops_at_once(site, tokens):
    app, seeded, base, tmp = site
    token = add_client(tmp, "short-lived", seeded["county"]["code"], "--operations", "tasks:read")
    assert call(base, "GET", "/api/v1/tasks", token)[0] == 200
    status, headers, body = call(base, "GET", "/api/v1/tasks", None)
    assert status == 401 and headers["WWW-Authenticate"] == "Bearer"
    forged = token[:-1] + ("B" if token.endswith("A") else "A")   # never the token itself
    assert call(base, "GET", "/api/v1/tasks", forged)[0] == 401
    status, _, body = call(base, "GET", "/api/v1/calls", token)
    assert status == 403 and body["error"]["code"] == "operation_not_allowed"
    subprocess.run([sys.executable, "-m", "khhfcli.main", "--config", str(tmp / "khhf.conf"),
                    "api", "clients", "revoke", "short-lived"], check=True, capture_output=True)
    assert call(base, "GET", "/api/v1/tasks", token)[0] == 401


def test_a_browser_session_does_not_authenticate_the_api(site):
    app, _, _, _ = site
    client = app.test_client()
    log_in_as(client, app, "admin")
    response = client.get("/api/v1/tasks")
    assert response.status_code == 401 and "Set-Cookie" not in response.headers
    # and no CSRF token is asked of a token-carrying POST: the 401 is the token's
    assert client.post("/api/v1/customers", json={"rows": []}).status_code == 401


def test_the_rate_limit_answers_429_with_retry_after(site):
    app, seeded, base, tmp = site
    token = add_client(tmp, "limited", seeded["county"]["code"], "--rate", "3")
    assert [call(base, "GET", "/api/v1/client", token)[0] for _ in range(3)] == [200] * 3
    status, headers, body = call(base, "GET", "/api/v1/client", token)
    assert status == 429 and 1 <= int(headers["Retry-After"]) <= 60
    assert body["error"]["code"] == "rate_limited"


def test_a_source_address_outside_the_allow_list_is_refused(site):
    app, seeded, base, tmp = site
    token = add_client(tmp, "walled", seeded["county"]["code"], "--allow", "10.9.0.0/16")
    status, _, body = call(base, "GET", "/api/v1/client", token)
    assert status == 403 and body["error"]["code"] == "address_not_allowed"


def test_cli_lists_and_refuses_clearly(site, tokens):
    tmp = site[3]
    run = [sys.executable, "-m", "khhfcli.main", "--config", str(tmp / "khhf.conf"), "api"]
    listed = subprocess.run([*run, "clients", "list"], capture_output=True, text=True,
                            check=True).stdout
    assert "crm-a" in listed and "crm-b" in listed
    refused = subprocess.run([*run, "clients", "add", "x", "--county", "nowhere"],
                             capture_output=True, text=True)
    assert refused.returncode == 1 and "county" in refused.stderr


def test_engine_hook_is_installed_once(site):
    # a second engine in the same process does not queue every event twice
    engine = db.make_engine(site[0].extensions["khhf_settings"].database_url)
    engine.dispose()
    with session_for(site[0]) as s:
        assert s.scalar(select(func.count()).select_from(CustomerAssignment)) > 0


def test_the_admin_page_adds_shows_the_token_once_and_revokes(site):
    app, seeded, base, _ = site
    client = app.test_client()
    log_in_as(client, app, "admin")
    token_field = csrf_token(client, "/admin/api")
    page = client.post("/admin/api", data={
        "csrf_token": token_field, "name": "from-the-page", "county": seeded["county"]["code"],
        "operations": ["tasks:read"], "rate_per_minute": "60", "webhook_url": "ftp://x"})
    assert "推送地址须为 http://" in page.get_data(as_text=True)  # the service's reason, on the field
    page = client.post("/admin/api", data={
        "csrf_token": token_field, "name": "from-the-page", "county": seeded["county"]["code"],
        "operations": ["tasks:read"], "rate_per_minute": "60"}).get_data(as_text=True)
    token = re.search(r"khhf_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", page).group(0)
    assert call(base, "GET", "/api/v1/tasks", token)[0] == 200
    assert token not in client.get("/admin/api").get_data(as_text=True)   # shown once
    with session_for(app) as s:
        client_id = api_clients.by_name(s, "from-the-page").id
    client.post(f"/admin/api/{client_id}/revoke", data={"csrf_token": token_field})
    assert call(base, "GET", "/api/v1/tasks", token)[0] == 401
    assert "已吊销" in client.get("/admin/api").get_data(as_text=True)
