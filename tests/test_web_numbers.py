"""The admin's number-pool page (统一号码池): the pool with today's use, add,
rest, reactivate, retire and caps, each audited; the per-number report and
its warning; in Chinese, through the test client with CSRF on."""

import datetime as dt

import pytest
from sqlalchemy import select

from khhf.calls.states import CallState
from khhf.models import AuditLog, Call, UnifiedNumber, utcnow
from simkit.seed import POOL
from simkit.web import csrf_token, log_in, make_app, session_for


@pytest.fixture
def web(tmp_path):
    app, seeded = make_app(tmp_path)
    client = app.test_client()
    assert log_in(client, "admin", seeded["passwords"]["admin"]).status_code == 302
    return app, client, f"/admin/counties/{seeded['county']['id']}/numbers"


def _post(client, page, path, data):
    return client.post(path, data={**data, "csrf_token": csrf_token(client, page)})


def test_the_pool_is_listed_changed_and_audited(web):
    app, client, page = web
    html = client.get(page).get_data(as_text=True)
    assert "示范县的统一号码池" in html and all(f'id="number-{n}"' in html for n in POOL)
    assert "在用" in html and "0 / 200" in html   # the demo's caps (simkit.seed)
    assert _post(client, page, page, {"number": "13900000007", "daily_cap": "80",
                                      "hourly_cap": "", "concurrent_cap": "1"}).status_code == 302
    assert _post(client, page, page + "/state", {"number": POOL[1], "state": "resting"}
                 ).status_code == 302
    assert _post(client, page, page + "/caps", {"number": "13900000007", "daily_cap": "90",
                                                "hourly_cap": "30", "concurrent_cap": "1"}
                 ).status_code == 302
    html = client.get(page).get_data(as_text=True)
    assert "已保存 13900000007 的上限。" in html
    with session_for(app) as s:
        rows = {n.number: n for n in s.scalars(select(UnifiedNumber))}
        assert rows[POOL[1]].state == "resting"
        assert (rows["13900000007"].daily_cap, rows["13900000007"].hourly_cap) == (90, 30)
        entries = s.scalars(select(AuditLog).where(AuditLog.object_type == "unified_number",
                                                   AuditLog.username == "admin")
                            .order_by(AuditLog.id)).all()
        assert [(e.action, e.object_name) for e in entries] == [
            ("create", "13900000007"), ("update", POOL[1]), ("update", "13900000007")]
    audit = client.get("/audit/").get_data(as_text=True)
    assert "号码状态由“在用”改为“休息”" in audit


def test_refusals_are_in_chinese_and_write_nothing(web):
    app, client, page = web
    html = _post(client, page, page, {"number": POOL[0]}).get_data(as_text=True)
    assert "13900000000 已是示范县的统一号码。" in html
    html = _post(client, page, page, {"number": "13900000008", "daily_cap": "lots"}
                 ).get_data(as_text=True)
    assert "上限须为 0（不限）到 100000 之间的整数。" in html
    response = _post(client, page, page + "/state", {"number": POOL[0], "state": "retired"})
    assert "主号码" in client.get(response.location).get_data(as_text=True)
    # a number of no county of this page's
    response = _post(client, page, page + "/state", {"number": "13900000099", "state": "resting"})
    assert "13900000099 不是示范县的统一号码。" in client.get(response.location).get_data(as_text=True)
    with session_for(app) as s:
        assert s.scalars(select(AuditLog).where(AuditLog.object_type == "unified_number",
                                                AuditLog.username == "admin")).all() == []


def test_the_page_warns_of_a_number_the_carrier_stopped_answering(web):
    app, client, page = web
    now = utcnow() - dt.timedelta(minutes=5)
    with session_for(app) as s:
        county_id = s.scalar(select(UnifiedNumber.county_id))
        for number, answered in ((POOL[0], 12), (POOL[1], 2)):
            for k in range(25):
                s.add(Call(direction="outbound", county_id=county_id, unified_number=number,
                           customer_number="13700000001", state=CallState.ENDED,
                           requested_at=now, answer_at=now if k < answered else None,
                           talk_seconds=30 if k < answered else None))
        s.commit()
    html = client.get(page).get_data(as_text=True)
    assert 'id="number-warning-13900000002"' in html and "建议让它休息" in html
    assert 'id="number-warning-13900000000"' not in html
    assert "48%" in html and "8%" in html   # the report's answer rates
