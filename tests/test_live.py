"""The live view's rules without a browser: the board from the PBX's
channels and the call rows, the listen-in's Originate, supervisors' desk
phones, and that the listen-in context is reachable only by originate.
(The end-to-end proof with Asterisk, SIPp and chromium is
tests/test_live_browser.py.)"""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from ami_bridge.originate import ListenCall, OriginateError, listen_action
from khhf import db
from khhf.bridge_client import Channel
from khhf.config import Settings
from khhf.models import AuditLog, Call, Feedback, User
from khhf.services import ValidationError, accounts, live
from simkit import factories

NOW = dt.datetime(2026, 11, 28, 4, 0)   # 12:00 in Beijing


@pytest.fixture
def session(tmp_path):
    engine = db.make_engine(f"sqlite:///{tmp_path / 'live.db'}")
    db.create_schema(engine)
    with db.session_factory(engine)() as s:
        yield s
    engine.dispose()


@pytest.fixture
def county(session):
    county = factories.county(session, "demo", "示范县", unified="13900000000")
    factories.task_type(session)
    for ext in ("8001", "8002"):
        factories.manager(session, county, f"m{ext}", desk=ext, display_name=f"经理{ext}",
                          on_duty=ext == "8001")
    return county


def _call(session, manager_ext, direction="outbound", at=NOW, **fields):
    manager = session.scalar(select(User).where(User.username == f"m{manager_ext}")).manager \
        if manager_ext else None
    call = Call(direction=direction, manager_id=manager.id if manager else None,
                county_id=manager.county_id if manager else fields.pop("county_id"),
                customer_number=fields.pop("number", "13812345678"), requested_at=at,
                **fields)
    session.add(call)
    session.flush()
    return call


def test_listen_action_is_validated():
    action = listen_action(ListenCall("8009", "8001", "whisper"))
    assert (action["Channel"], action["Context"], action["Exten"]) == (
        "PJSIP/8009", "khhf-listen", "8001")
    assert action["Variable"] == ["KHHF_LISTEN_MODE=whisper"]
    for bad, why in [(ListenCall("8009", "8001;x", "listen"), "manager desk extension"),
                     (ListenCall("PJSIP/1", "8001", "listen"), "supervisor desk extension"),
                     (ListenCall("8001", "8001", "listen"), "itself"),
                     (ListenCall("8009", "8001", "barge"), "listen mode")]:
        with pytest.raises(OriginateError, match=why):
            listen_action(bad)


def test_the_board_is_the_pbx_now_and_the_rows_of_today(session, county):
    settings = Settings()
    talking = _call(session, "8001", linkedid="khhf-1-ab", state="connected",
                    answer_at=NOW - dt.timedelta(seconds=40))
    _call(session, "8001", state="ended", answer_at=NOW - dt.timedelta(hours=1),
          at=NOW - dt.timedelta(hours=1))
    # yesterday (Beijing): not today's
    _call(session, "8001", state="ended", at=NOW - dt.timedelta(hours=13))
    # the row says live, the PBX has no channel: not shown as a call
    _call(session, "8002", linkedid="khhf-9-cd", state="connected")
    ringing = _call(session, None, "inbound", linkedid="1700000000.5", state="requested",
                    county_id=county.id, number="13911112222")
    _call(session, None, "inbound", state="ended", outcome="missed", county_id=county.id,
          number="13933334444", at=NOW - dt.timedelta(minutes=5))
    task = factories.task(session, factories.customer(session, county, "13800000001",
                                                      talking.manager), talking.manager)
    session.add(Feedback(task_id=task.id, manager_id=talking.manager_id, channel="web",
                         result_code_id=task.task_type.result_codes[0].id, created_at=NOW))
    session.flush()
    channels = [Channel("8001", "khhf-1-ab", "Up", 45, "AppDial"),
                Channel("carrier", "khhf-1-ab", "Up", 41, "AppDial"),
                Channel("carrier", "1700000000.5", "Ring", 3, "Dial")]

    board = live.board(session, settings, county.id, channels, NOW)
    m8001, m8002 = board.managers
    assert (m8001.activity, m8001.since, m8001.on_duty) == (
        "on_call", NOW - dt.timedelta(seconds=45), True)
    assert (m8001.direction, m8001.customer, m8001.can_listen) == (
        "outbound", "138****5678", True)
    assert (m8001.calls, m8001.connected, m8001.results) == (2, 2, 1)
    assert (m8002.activity, m8002.on_duty, m8002.can_listen, m8002.calls) == (
        "idle", False, False, 1)
    assert [c.id for c in board.ringing] == [ringing.id]
    assert [c.caller for c in board.missed] == ["139****4444"] and board.missed_today == 1
    # the bridge cannot say: the open rows are what is known
    unknown = live.board(session, settings, county.id, None, NOW)
    assert not unknown.pbx_known
    assert [m.activity for m in unknown.managers] == ["on_call", "on_call"]
    assert not any(m.can_listen for m in unknown.managers)
    # another county's board has none of these
    other = factories.county(session, "other", unified="13900000001")
    assert live.board(session, settings, other.id, channels, NOW).managers == []


def test_listen_is_refused_with_a_reason_and_granted_to_the_county_supervisor(
        session, county):
    supervisor = factories.user(session, "sup", "supervisor", county)
    manager = session.scalar(select(User).where(User.username == "m8001")).manager
    up = [Channel("8001", "khhf-1-ab", "Up", 5, "AppDial")]
    with pytest.raises(ValidationError, match="no desk phone"):
        live.request_listen(session, supervisor, manager.id, "listen", up)
    accounts.set_desk_extension(session, None, "", supervisor, "8009")
    with pytest.raises(ValidationError, match="not on a desk-phone call"):
        live.request_listen(session, supervisor, manager.id, "listen",
                            [Channel("8001", "khhf-1-ab", "Ringing", 5, "AppDial")])
    with pytest.raises(ValidationError, match="silent listen or whisper"):
        live.request_listen(session, supervisor, manager.id, "barge", up)
    with pytest.raises(ValidationError, match="is busy"):
        live.request_listen(session, supervisor, manager.id, "listen",
                            up + [Channel("8009", "x", "Up", 1, "Dial")])
    with pytest.raises(ValidationError, match="own county"):
        live.request_listen(session, supervisor, 10**6, "listen", up)
    plan = live.request_listen(session, supervisor, manager.id, "whisper", up)
    assert (plan.supervisor_desk, plan.manager_desk, plan.mode) == ("8009", "8001", "whisper")
    # behind the SIP edge: the plan names the node whose PBX has the call
    elsewhere = [Channel("8001", "n2-1-ab", "Up", 5, "AppDial", node="n2")]
    assert live.request_listen(session, supervisor, manager.id, "listen", elsewhere).node == "n2"
    reasons = [e.detail for e in session.scalars(select(AuditLog).where(
        AuditLog.action == "listen_refused").order_by(AuditLog.id))]
    assert [r.split('"reason": ')[1].split('"')[1] for r in reasons] == [
        "no_desk_phone", "no_call", "bad_mode", "desk_busy", "other_county"]
    # an administrator listens to any county's manager
    admin = factories.user(session, "root", "admin", None)
    admin.desk_extension = "8010"
    assert live.request_listen(session, admin, manager.id, "listen", up).manager is manager


def test_a_supervisors_desk_phone_is_one_of_a_kind_and_rendered(session, county):
    supervisor = factories.user(session, "sup", "supervisor", county)
    with pytest.raises(ValidationError, match="already in use"):
        accounts.set_desk_extension(session, None, "", supervisor, "8001")
    with pytest.raises(ValidationError, match="4 digits"):
        accounts.set_desk_extension(session, None, "", supervisor, "80")
    accounts.set_desk_extension(session, None, "127.0.0.1", supervisor, "8009")
    other = factories.user(session, "sup2", "supervisor", county)
    with pytest.raises(ValidationError, match="already in use"):
        accounts.set_desk_extension(session, None, "", other, "8009")
    manager = session.scalar(select(User).where(User.username == "m8002"))
    with pytest.raises(ValidationError, match="manager's page"):
        accounts.set_desk_extension(session, None, "", manager, "8011")
    # a manager cannot take the supervisor's extension either
    with pytest.raises(ValidationError, match="already in use"):
        accounts.update_manager(session, None, "", manager.manager, display_name="经理8002",
                                county_id=county.id, employee_no=manager.manager.employee_no,
                                desk_extension="8009", mobile="", status="active",
                                successor_id=None)
    assert accounts.active_desk_extensions(session) == ["8001", "8002", "8009"]
    supervisor.is_active = False
    assert accounts.active_desk_extensions(session) == ["8001", "8002"]


@pytest.mark.pbx
def test_the_listen_context_is_reachable_only_by_originate(pbx_harness):
    h = pbx_harness
    listen = h.pbx.cli("dialplan show khhf-listen")
    assert "ChanSpy(${TARGET},qES)" in listen and "ChanSpy(${TARGET},qESw)" in listen
    assert "app_chanspy.so" in h.pbx.cli("module show like chanspy")
    # no phone lands in it, and no context a phone lands in includes it
    for endpoint in ("8001", "8002", "8003"):
        shown = h.pbx.cli(f"pjsip show endpoint {endpoint}")
        assert " context " in shown and ": khhf-desk" in shown.split(" context ", 1)[1][:60]
    desk = h.pbx.cli("dialplan show khhf-desk")
    assert "khhf-listen" not in desk and "Include" not in desk
    assert "khhf-listen" not in h.pbx.cli("dialplan show khhf-from-trunk")


def test_an_administrator_gives_a_supervisor_a_desk_phone(tmp_path):
    from simkit.web import csrf_token, log_in_as, make_app, session_for
    app, _ = make_app(tmp_path)
    with session_for(app) as s:
        supervisor = s.scalar(select(User).where(User.role == "supervisor"))
        admin = s.scalar(select(User).where(User.role == "admin"))
        manager_ext = s.scalar(select(User).where(User.role == "manager")).manager.desk_extension
        sid, form = supervisor.id, {"display_name": supervisor.display_name,
                                    "role": "supervisor", "county_id": supervisor.county_id,
                                    "is_active": "y"}
    client = app.test_client()
    log_in_as(client, app, admin.username)
    token = csrf_token(client, f"/admin/users/{sid}")
    taken = client.post(f"/admin/users/{sid}", data={**form, "desk_extension": manager_ext,
                                                     "csrf_token": token})
    assert taken.status_code == 200 and f"分机号 {manager_ext} 已被占用" in \
        taken.get_data(as_text=True)
    saved = client.post(f"/admin/users/{sid}", data={**form, "desk_extension": "8719",
                                                     "csrf_token": token})
    assert saved.status_code == 302
    with session_for(app) as s:
        assert s.get(User, sid).desk_extension == "8719"
        assert "8719" in accounts.active_desk_extensions(s)
    # a manager's user page has no such field: their phone is on the manager's page
    with session_for(app) as s:
        manager_user = s.scalar(select(User).where(User.role == "manager"))
    assert 'name="desk_extension"' not in client.get(
        f"/admin/users/{manager_user.id}").get_data(as_text=True)
