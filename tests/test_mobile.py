"""The phone pages and the two-leg call (双呼), without the PBX: the dialing
service's device choice and refusals, the legs of a call whose two
channels are both on the trunk, the mobile outcomes, and a phone log-in
kept until the end of the day."""

import dataclasses
import datetime as dt
import re

import pytest
from sqlalchemy import select

from ami_bridge.originate import OriginateError, OutboundCall, originate_action
from khhf import db
from khhf.calls import events
from khhf.calls.facts import CUSTOMER, MANAGER, CallFacts, LegEvent, reduce, summarize
from khhf.models import AuditLog, Call, Manager, User
from khhf.services import ValidationError
from khhf.services.dialing import default_device, request_call
from simkit.bridge_env import BridgeEnv, NoPbx
from simkit.web import csrf_token, make_app

NOON = dt.datetime(2026, 11, 27, 3, 0)  # 11:00 in Asia/Shanghai


@pytest.fixture
def env(tmp_path):
    env = BridgeEnv(NoPbx(tmp_path), tmp_path)  # database and seed only
    env.settings = dataclasses.replace(env.settings, calling_window="08:00-21:00")
    return env


def _call(env, username, task_id, device):
    with db.unit_of_work(env.sessions) as s:
        user = s.scalar(select(User).where(User.username == username))
        return request_call(s, env.settings, user, task_id, now=NOON, device=device).id


def _manager(s, ext):
    return s.scalar(select(Manager).where(Manager.desk_extension == ext))


# -- the dialing service ---------------------------------------------------------------
def test_a_mobile_call_is_a_call_row_like_a_desk_call(env):
    task_id = env.task_for("8001", "13812345678")
    call_id = _call(env, "m8001", task_id, "mobile")
    with env.sessions() as s:
        call = s.get(Call, call_id)
        assert (call.manager_device, call.state, call.unified_number) == (
            "mobile", "requested", "13900000000")
        assert call.recording_path == f"2026/11/27/{call_id}.wav"
        entry = s.scalars(select(AuditLog)).one()
        assert '"device": "mobile"' in entry.detail


def test_the_default_phone_follows_duty_and_what_the_manager_has(env):
    with env.sessions() as s:
        manager = _manager(s, "8001")
        manager.on_duty = True
        assert default_device(manager) == "desk"       # 在岗: at the desk
        manager.on_duty = False
        assert default_device(manager) == "mobile"     # 离岗: away from it
        manager.mobile = None
        assert default_device(manager) == "desk"       # no mobile: the desk only
        manager.mobile, manager.desk_extension = "13700008001", None
        assert default_device(manager) == "mobile"


def test_mobile_refusals(env):
    task_id = env.task_for("8001", "13812345678")
    with db.unit_of_work(env.sessions) as s:
        _manager(s, "8001").mobile = None
    with pytest.raises(ValidationError, match="no mobile number on file"):
        _call(env, "m8001", task_id, "mobile")
    with pytest.raises(ValidationError, match="desk phone or the mobile"):
        _call(env, "m8001", task_id, "fax")
    # the same refusals as from the desk: not one's own task, outside the window
    theirs = env.task_for("8002", "13812345670")
    with pytest.raises(ValidationError, match="not yours"):
        _call(env, "m8001", theirs, "mobile")
    with db.unit_of_work(env.sessions) as s:
        user = s.scalar(select(User).where(User.username == "m8002"))
        with pytest.raises(ValidationError, match="between 08:00-21:00"):
            request_call(s, env.settings, user, theirs, device="mobile",
                         now=dt.datetime(2026, 11, 27, 13, 30))
    with env.sessions() as s:
        assert s.scalars(select(Call)).all() == []   # nothing half-written


# -- the originate action --------------------------------------------------------------
def test_a_mobile_originate_rings_the_mobile_through_the_trunk_as_the_unified_number():
    call = OutboundCall(call_id=5, channel_id="khhf-5-ab", task_id=3, desk_extension="8001",
                        customer_number="13812345678", unified_number="13900000000",
                        recording_file="2026/11/27/5.wav", manager_device="mobile",
                        manager_mobile="13700008001")
    action = originate_action(call)
    assert action["Channel"] == "PJSIP/13700008001@carrier"
    assert action["CallerID"] == "13900000000"
    assert action["Exten"] == "13812345678" and action["Context"] == "khhf-outbound"
    with pytest.raises(OriginateError, match="mobile"):
        originate_action(dataclasses.replace(call, manager_mobile="8001"))


# -- both legs on the trunk: which is which -------------------------------------------
LINKED = "khhf-9-0a0b0c0d"


def _ami(name, channel, uniqueid, at, **extra):
    return {"Event": name, "Channel": channel, "Uniqueid": uniqueid, "Linkedid": LINKED,
            "Timestamp": f"{1764212400 + at:.6f}", **extra}


def test_the_originated_channel_is_the_managers_leg_even_on_the_trunk():
    mobile, customer = "PJSIP/carrier-00000001", "PJSIP/carrier-00000002"
    trace = [
        _ami("Newchannel", mobile, LINKED, 0),
        _ami("Newstate", mobile, LINKED, 1, ChannelStateDesc="Up"),
        _ami("Newchannel", customer, "1764212401.7", 1.1),
        _ami("Newstate", customer, "1764212401.7", 3, ChannelStateDesc="Up"),
        _ami("HangupRequest", customer, "1764212401.7", 6),
        _ami("Hangup", customer, "1764212401.7", 6.01, Cause="16"),
        _ami("Hangup", mobile, LINKED, 6.02, Cause="16"),
    ]
    legs = [le for e in trace for le in events.from_ami(e)]
    assert [le.leg for le in legs if le.kind == "start"] == [MANAGER, CUSTOMER]
    facts = CallFacts()
    for le in legs:
        facts = reduce(facts, le)
    row = summarize(facts, "mobile")
    assert (row["state"], row["outcome"], row["hangup_by"], row["talk_seconds"]) == (
        "ended", "answered", "customer", 3)


def test_cel_hangup_source_on_a_two_leg_call():
    mobile, customer = "PJSIP/carrier-00000001", "PJSIP/carrier-00000002"
    row = {"eventtype": "HANGUP", "eventtime": "1764212406.0", "uniqueid": LINKED,
           "linkedid": LINKED, "channame": mobile,
           "eventextra": '{"hangupcause":16,"hangupsource":"%s"}' % customer}
    request, hangup = events.from_cel(row)
    assert (request.kind, request.leg, hangup.leg) == ("hangup_request", CUSTOMER, MANAGER)
    row = dict(row, uniqueid="1764212401.7", channame=customer)
    request, hangup = events.from_cel(row)
    assert (request.leg, hangup.leg) == (CUSTOMER, CUSTOMER)


@pytest.mark.parametrize("cause, outcome", [(17, "mobile_busy"), (19, "mobile_no_answer"),
                                            (34, "mobile_unreachable")])
def test_mobile_outcomes(cause, outcome):
    at = dt.datetime(2026, 11, 27, 3)
    facts = CallFacts()
    for le in (LegEvent("start", at, MANAGER), LegEvent("hangup", at, MANAGER, cause=cause)):
        facts = reduce(facts, le)
    assert summarize(facts, "mobile")["outcome"] == outcome
    assert summarize(facts)["outcome"] == outcome.replace("mobile_", "manager_").replace(
        "manager_unreachable", "manager_unavailable")


# -- a phone log-in kept for the day ---------------------------------------------------
@pytest.fixture
def web(tmp_path):
    return make_app(tmp_path)


def _phone_log_in(client, seeded, keep):
    data = {"username": "manager1", "password": seeded["passwords"]["manager1"],
            "csrf_token": csrf_token(client, "/m/login")}
    if keep:
        data["keep_for_the_day"] = "y"
    response = client.post("/m/login", data=data)
    assert response.status_code == 302 and response.location == "/m/"
    return response


def test_a_phone_log_in_is_kept_until_the_end_of_the_day(web):
    app, seeded = web
    client = app.test_client()
    response = _phone_log_in(client, seeded, keep=True)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and re.search(r"Expires=", cookie)
    with client.session_transaction() as sess:
        assert sess["login_until"] > sess["login_at"]
        # past the ordinary 8 hours, before the day's end: still logged in
        sess["login_at"] -= app.config["SESSION_HOURS"] * 3600 + 60
        sess["login_until"] = dt.datetime.now(dt.timezone.utc).timestamp() + 600
    assert client.get("/m/").status_code == 200
    with client.session_transaction() as sess:
        sess["login_until"] = dt.datetime.now(dt.timezone.utc).timestamp() - 1
    response = client.get("/m/")
    assert response.status_code == 302 and response.location.startswith("/m/login")


def test_without_keeping_it_a_phone_log_in_lasts_like_any_other(web):
    app, seeded = web
    client = app.test_client()
    _phone_log_in(client, seeded, keep=False)
    with client.session_transaction() as sess:
        assert "login_until" not in sess
        sess["login_at"] -= app.config["SESSION_HOURS"] * 3600 + 1
    assert client.get("/m/").status_code == 302


def test_log_out_from_the_phone_goes_back_to_its_log_in(web):
    app, seeded = web
    client = app.test_client()
    _phone_log_in(client, seeded, keep=True)
    token = csrf_token(client, "/m/")
    response = client.post("/logout", data={"csrf_token": token, "next": "/m/login"})
    assert response.location == "/m/login"
    assert client.get("/m/").status_code == 302
    # and nowhere else
    _phone_log_in(client, seeded, keep=True)
    token = csrf_token(client, "/m/")
    response = client.post("/logout", data={"csrf_token": token,
                                            "next": "https://evil.example/"})
    assert response.location == "/login"


def test_mobile_outcomes_and_progress_read_in_chinese(web):
    from types import SimpleNamespace

    from webui.calls import progress_label
    from webui.i18n import call_outcome
    app, _ = web
    with app.test_request_context("/m/"):
        labels = {code: call_outcome(SimpleNamespace(outcome=code, state="failed"))
                  for code in ("mobile_busy", "mobile_no_answer", "mobile_unreachable")}
        assert labels == {"mobile_busy": "您的手机忙线", "mobile_no_answer": "您的手机未接听",
                          "mobile_unreachable": "您的手机无法接通"}
        ringing = SimpleNamespace(state="manager_ringing", manager_device="mobile", outcome=None)
        assert progress_label(ringing) == "手机振铃"
        desk = SimpleNamespace(state="manager_ringing", manager_device="desk", outcome=None)
        assert progress_label(desk) == "座机振铃"
