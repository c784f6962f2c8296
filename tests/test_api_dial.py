"""Click-to-dial through the integration API, end to end: a CRM posts
/api/v1/calls over HTTP; the web's dial decides; the AMI bridge
originates through the real Asterisk; the SIPp desk phone rings and
answers, the SIPp carrier answers as the customer; the call-ended
webhook arrives signed at a receiver on loopback; the recording is
fetched with a Range."""

import json

import pytest
from sqlalchemy import select

from khhf import db, webhooks
from khhf.models import Task
from khhf.services import api_clients
from simkit.bridge_env import UNIFIED, BridgeEnv
from simkit.browser import serve
from tests.test_api import call
from tests.test_api_webhooks import Receiver, verify

CUSTOMER = "13812346666"


@pytest.fixture
def served(pbx_harness, tmp_path):
    env = BridgeEnv(pbx_harness, tmp_path).start()
    receiver = Receiver()
    app, _ = env.web_app("m8001")
    with db.unit_of_work(env.sessions) as s:
        _, token = api_clients.create(
            s, None, "", name="crm", county_code="demo", webhook_url=receiver.url,
            operations=["calls:dial", "calls:read", "recordings:read", "webhooks"])
    with serve(app) as base:
        yield env, base, token, receiver
    receiver.down()
    env.stop()


def test_a_crm_dials_through_the_api_and_gets_the_signed_end(served, pbx_harness):
    env, base, token, receiver = served
    task_id = env.task_for("8001", CUSTOMER)
    desk = pbx_harness.desk_phone("8001")
    customer = pbx_harness.trunk("answer_hangup.xml", duration_ms=1500)
    # every rule of the web's dial applies: not the task's manager, refused before anything rings
    status, _, refused = call(base, "POST", "/api/v1/calls", token,
                              {"task_id": task_id, "manager": "E8002"})
    assert status == 409 and refused["error"]["field"] == "task"
    status, _, placed = call(base, "POST", "/api/v1/calls", token,
                             {"task_id": task_id, "manager": "E8001"})
    assert status == 201, placed
    assert customer.wait(30) == 0 and desk.wait(30) == 0
    [invite] = customer.received("INVITE")
    assert f"sip:{UNIFIED}@" in invite.header("From")
    ended = env.wait_final(placed["id"], recording=True)
    assert ended.outcome == "answered"
    with env.sessions() as s:
        assert s.get(Task, task_id).attempts == 1
    status, _, shown = call(base, "GET", f"/api/v1/calls/{placed['id']}", token)
    assert (shown["outcome"], shown["recording"]) == ("answered", True)
    assert shown["talk_seconds"] is not None
    # the recording, in part
    status, headers, part = call(base, "GET", f"/api/v1/calls/{placed['id']}/recording",
                                 token, headers={"Range": "bytes=0-43"}, raw=True)
    assert status == 206 and part[:4] == b"RIFF" and len(part) == 44
    assert headers["Content-Range"].startswith("bytes 0-43/")
    # the timed-jobs daemon's delivery: the call's end, signed
    webhooks.deliver_due(env.sessions, db.session_factory(env.engine, writer=True))
    [(headers, body)] = [(h, b) for h, b in receiver.got if h["X-KHHF-Event"] == "call.ended"]
    assert verify(token, headers, body)
    event = json.loads(body)
    assert event["id"] == f"call.ended:{placed['id']}"
    assert (event["data"]["outcome"], event["data"]["manager"]) == ("answered", "E8001")
    with env.sessions() as s:
        assert s.scalar(select(Task.status).where(Task.id == task_id)) == "connected"
