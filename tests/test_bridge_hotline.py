"""A hotline call whose row the AGI service never wrote (it died between its
answer and its delayed write, or was down at the hang-up) gets its one row
from the hang-up's own event, in the AMI stream or in CEL, with the customer
and manager the route chose; a row the AGI wrote is never doubled; and a
row two writers close at once is closed once. (The real Asterisk, SIPp and
a killed AGI service: tests/test_hotline_e2e.py.)"""

from __future__ import annotations

import csv
import datetime as dt
import threading
import time

import pytest
from sqlalchemy import func, select

from ami_bridge.bridge import Bridge
from khhf import db
from khhf.calls import events, inbound
from khhf.models import Call, County, Customer, Manager, SmsMessage, Task
from khhf.services import hotline
from simkit import factories
from simkit.bridge_env import UNIFIED, BridgeEnv, NoPbx

CALLER = "13812340001"
ARRIVED = 1_800_000_000          # 2027-01-15 08:00:00 UTC
HUNG_UP = ARRIVED + 50.25


@pytest.fixture(params=["sqlite", "postgresql"])
def env(request, tmp_path):
    url = None
    if request.param == "postgresql":
        url = request.getfixturevalue("pg_database")("hl").url.render_as_string(
            hide_password=False)
    env = BridgeEnv(NoPbx(tmp_path), tmp_path, database_url=url)
    with db.unit_of_work(env.sessions) as s:
        county = s.scalar(select(County))
        owner = s.scalar(select(Manager).where(Manager.desk_extension == "8002"))
        env.customer = factories.customer(s, county, CALLER, owner).id
        env.owner = owner.id
        env.other = s.scalar(select(Manager.id).where(Manager.desk_extension == "8003"))
    env.bridge = Bridge(env.settings, env.engine, state_dir=tmp_path / "bridge")
    yield env
    env.engine.dispose()


def facts(env, *, stage="desk", status="ANSWER", answered="41600", peer="8002", routed=True,
          rec="2027/01/15/in-1800000000.7.wav") -> str:
    """KHHF_END as the h extension sets it (khhf/calls/inbound.py FIELDS)."""
    ids = (env.customer, env.owner, "manager") if routed else ("", "", "")
    return "/".join(map(str, (stage, status, answered, peer, UNIFIED, ids[0], ids[1], ARRIVED,
                              ids[2], CALLER, rec)))


def ami_end(uniqueid: str, facts_: str) -> dict:
    return {"Event": "UserEvent", "UserEvent": inbound.HOTLINE_END_EVENT, "Uniqueid": uniqueid,
            "Linkedid": uniqueid, "Channel": "PJSIP/carrier-00000007",
            "Timestamp": f"{HUNG_UP:.6f}", "Facts": facts_}


def write_cel(env, uniqueid: str, facts_: str) -> None:
    """The CEL row CELGenUserEvent(KhhfHotlineEnd,...) writes, as Asterisk does."""
    path = env.bridge.cel.path
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"eventtype": inbound.HOTLINE_END_EVENT, "eventtime": f"{HUNG_UP:.6f}",
           "uniqueid": uniqueid, "linkedid": uniqueid, "channame": "PJSIP/carrier-00000007",
           "exten": "h", "appname": "CELGenUserEvent",
           "appdata": f"{inbound.HOTLINE_END_EVENT},{facts_}",
           "eventextra": f'{{"extra":"{facts_}"}}', "userdeftype": inbound.HOTLINE_END_EVENT}
    with open(path, "a", newline="") as fh:
        csv.writer(fh, quoting=csv.QUOTE_ALL).writerow([row[c] for c in events.CEL_COLUMNS])


def rows(env, uniqueid: str) -> list[Call]:
    with env.sessions() as s:
        found = s.scalars(select(Call).where(Call.uniqueid == uniqueid)).all()
        s.expunge_all()
        return list(found)


def callbacks(env) -> tuple[int, int]:
    """(call-back tasks, SMS queued)."""
    with env.sessions() as s:
        return (s.scalar(select(func.count()).select_from(Task)),
                s.scalar(select(func.count()).select_from(SmsMessage)))


def agi_record(env, uniqueid: str) -> None:
    """The routing AGI's delayed write, as its directory routed the call."""
    routing = hotline.Routing(call_id=None, customer_id=env.customer, manager_id=env.owner,
                              desk="8002", mobile="", group=(), county_desks=(),
                              strategy="ringall", recording_file="x.wav", county_id=1,
                              customer_number=CALLER)
    with db.unit_of_work(env.sessions) as s:
        hotline.record_call(s, routing=routing, unified_number=UNIFIED, uniqueid=uniqueid,
                            linkedid=uniqueid, now=dt.datetime(2027, 1, 15, 8),
                            settings=env.settings)


def agi_hang_up(env, uniqueid: str, stage="message", status="NOANSWER", seconds=0) -> Call:
    with db.unit_of_work(env.sessions) as s:
        call = hotline.finish_call(s, uniqueid=uniqueid, caller=CALLER, unified_number=UNIFIED,
                                   settings=env.settings, hangup=hotline.Hangup(
                                       stage=stage, dial_status=status,
                                       answered_seconds=seconds, answered_by="8002"))
        s.flush()
        s.expunge(call)
        return call


def test_the_bridge_writes_the_row_of_a_call_whose_agi_died_after_its_answer(env):
    # after the route, the customer is handed to another manager: the row
    # still names the one the call was routed to (the channel's facts)
    with db.unit_of_work(env.sessions) as s:
        s.get(Customer, env.customer).manager_id = env.other
    env.bridge.apply_ami([ami_end("1800000000.7", facts(env))])
    [call] = rows(env, "1800000000.7")
    assert (call.direction, call.state, call.outcome, call.talk_seconds) == \
        ("inbound", "ended", "desk", 42)
    assert (call.customer_id, call.manager_id, call.customer_number, call.unified_number) == \
        (env.customer, env.owner, CALLER, UNIFIED)
    assert call.requested_at == dt.datetime(2027, 1, 15, 8)
    assert call.end_at == dt.datetime(2027, 1, 15, 8, 0, 50, 250000)
    assert call.recording_path == "2027/01/15/in-1800000000.7.wav"
    assert call.pbx_node == env.settings.pbx_name
    # the same hang-up again from CEL, then the AGI's late writes: nothing changes
    write_cel(env, "1800000000.7", facts(env))
    env.bridge.reconcile_once()
    agi_record(env, "1800000000.7")
    agi_hang_up(env, "1800000000.7", stage="desk", status="ANSWER", seconds=3)
    [again] = rows(env, "1800000000.7")
    assert (again.id, again.outcome, again.talk_seconds, again.end_at) == \
        (call.id, "desk", 42, call.end_at)


def test_from_cel_alone_a_missed_call_gets_its_row_and_one_call_back(env):
    """The bridge was down too: the reconciler reads the hang-up from CEL;
    the AGI never routed (degraded mode): the row is what the database says."""
    write_cel(env, "1800000000.8", facts(env, stage="message", status="NOANSWER", answered="",
                                         peer="", routed=False, rec=""))
    write_cel(env, "1800000000.9", "not/the/dialplan's")   # not a hang-up: ignored
    env.bridge.reconcile_once()
    [call] = rows(env, "1800000000.8")
    assert (call.state, call.outcome, call.customer_id, call.manager_id) == \
        ("ended", "missed", env.customer, env.owner)
    assert rows(env, "1800000000.9") == [] and callbacks(env) == (1, 1)
    env.bridge.apply_ami([ami_end("1800000000.8", facts(env, stage="message", routed=False))])
    assert len(rows(env, "1800000000.8")) == 1 and callbacks(env) == (1, 1)


def test_a_row_the_agi_wrote_and_closed_is_never_doubled_nor_changed(env):
    agi_record(env, "1800000000.5")
    closed = agi_hang_up(env, "1800000000.5")           # missed: a call-back and an SMS
    env.bridge.apply_ami([ami_end("1800000000.5", facts(env, stage="message",
                                                       status="NOANSWER"))])
    write_cel(env, "1800000000.5", facts(env, stage="message", status="NOANSWER"))
    env.bridge.reconcile_once()
    [call] = rows(env, "1800000000.5")
    assert (call.id, call.outcome, call.end_at) == (closed.id, "missed", closed.end_at)
    assert callbacks(env) == (1, 1)


def test_two_writers_closing_one_row_at_once_close_it_once(env):
    """The bridge closes the row (its transaction still open) while the
    hang-up AGI closes it too: the AGI waits for the row, then finds it
    closed; one call-back, one SMS, the bridge's end."""
    agi_record(env, "1800000000.6")
    end = inbound.from_ami(ami_end("1800000000.6", facts(env, stage="message",
                                                        status="NOANSWER")))
    results = []
    with db.unit_of_work(env.sessions) as s:
        hotline.complete_call(s, end, env.settings)
        agi = threading.Thread(target=lambda: results.append(agi_hang_up(env, "1800000000.6")))
        agi.start()
        time.sleep(0.5)                     # the AGI's transaction waits for ours
        assert agi.is_alive()
    agi.join(15)
    [call] = rows(env, "1800000000.6")
    assert (call.outcome, call.end_at) == ("missed", end.at)
    assert results[0].end_at == end.at and callbacks(env) == (1, 1)


def test_hang_up_facts_are_read_only_from_the_dialplans_event():
    at = dt.datetime(2027, 1, 15, 8, 0, 50, 250000)
    ok = inbound.parse("group/ANSWER/7250/8003/13900000000/5/2/1800000000/manager/+8613812340001/"
                       "2027/01/15/in-1.wav", uniqueid="1.2", linkedid="", at=at)
    assert ok == inbound.HotlineEnd(
        uniqueid="1.2", linkedid="1.2", at=at, arrived_at=dt.datetime(2027, 1, 15, 8),
        caller="+8613812340001", unified_number="13900000000", customer_id=5, manager_id=2,
        routed=True, stage="group", dial_status="ANSWER", answered_ms=7250,
        answered_by="8003", recording_file="2027/01/15/in-1.wav")
    assert inbound.parse("a/b", uniqueid="1.2", linkedid="", at=at) is None
    assert inbound.from_ami({"Event": "UserEvent", "UserEvent": "KhhfDial",
                             "Timestamp": "1800000000.1"}) is None
    assert inbound.from_cel({"eventtype": "HANGUP", "eventtime": "1800000000.1"}) is None
