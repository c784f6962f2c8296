"""Each outcome of a click-to-dial, end to end: web-side service -> bridge
command channel -> AMI Originate -> real Asterisk -> SIPp desk phone and
carrier -> AMI events and CEL -> call row and task state."""

import pytest

from simkit.bridge_env import BridgeEnv

CUSTOMER = "13812345678"


@pytest.fixture(scope="module")
def env(pbx_harness, tmp_path_factory):
    env = BridgeEnv(pbx_harness, tmp_path_factory.mktemp("bridge")).start()
    yield env
    env.stop()


def test_customer_answers_and_hangs_up_first(env, pbx_harness):
    desk = pbx_harness.desk_phone("8001")
    customer = pbx_harness.trunk("answer_hangup.xml", duration_ms=2000)
    call_id = env.dial("8001", CUSTOMER)
    assert customer.wait(30) == 0 and desk.wait(30) == 0
    call = env.wait_final(call_id, recording=True)
    assert (call.state, call.outcome, call.hangup_by) == ("ended", "answered", "customer")
    assert call.hangup_cause == 16
    assert 1 <= call.talk_seconds <= 3
    assert call.answer_at and call.end_at and call.ring_at
    assert abs(call.recording_seconds - 2.0) <= 0.5 and call.recording_bytes > 16000
    assert len(call.recording_sha256) == 64
    assert call.task_snapshot == ("connected", 1)


def test_manager_hangs_up_first(env, pbx_harness):
    desk = pbx_harness.desk_phone("8001", "answer_hangup.xml", duration_ms=2000)
    customer = pbx_harness.trunk("answer.xml")
    call_id = env.dial("8001", "13812340001")
    assert desk.wait(30) == 0 and customer.wait(30) == 0
    call = env.wait_final(call_id)
    assert (call.outcome, call.hangup_by) == ("answered", "manager")
    assert call.task_snapshot == ("connected", 1)


def test_manager_does_not_answer(env, pbx_harness):
    desk = pbx_harness.desk_phone("8001", "ring_forever.xml")
    trunk = pbx_harness.trunk("answer.xml")
    call_id = env.dial("8001", "13812340002")
    assert desk.wait(30) == 0, desk.trace_summary()
    call = env.wait_final(call_id)
    assert (call.state, call.outcome) == ("failed", "manager_no_answer")
    assert call.recording_path is None
    # the customer was never dialed, and the task waits to be called again
    trunk.stop()
    assert trunk.received("INVITE") == []
    assert call.task_snapshot == ("pending", 0)


@pytest.mark.parametrize("code, reason, outcome, cause", [
    (486, "Busy Here", "busy", 17),
    (404, "Not Found", "empty_number", 1),
    (480, "Temporarily Unavailable", "unreachable", None),
    # the carrier's own refusal: the customer never rang, the task is not charged
    (503, "Service Unavailable", "carrier_rejected", 34),
])
def test_customer_not_reached(env, pbx_harness, code, reason, outcome, cause):
    desk = pbx_harness.desk_phone("8001")
    customer = pbx_harness.trunk("reject.xml", fill={"CODE": code, "REASON": reason})
    call_id = env.dial("8001", f"1381234{code:04d}")
    assert customer.wait(30) == 0, customer.trace_summary()
    assert desk.wait(30) == 0
    call = env.wait_final(call_id)
    carrier = outcome.startswith("carrier_")
    assert (call.state, call.outcome, call.sip_code) == ("failed" if carrier else "ended",
                                                         outcome, code)
    if cause is not None:
        assert call.hangup_cause == cause
    assert call.answer_at is None and call.talk_seconds is None and call.recording_path is None
    assert call.task_snapshot == (("pending", 0) if carrier else ("not_reached", 1))


def test_customer_does_not_answer(env, pbx_harness):
    desk = pbx_harness.desk_phone("8001")
    customer = pbx_harness.trunk("ring_forever.xml")
    call_id = env.dial("8001", "13812340003")
    assert customer.wait(30) == 0, customer.trace_summary()
    assert desk.wait(30) == 0
    call = env.wait_final(call_id)
    assert (call.state, call.outcome) == ("ended", "no_answer")
    assert call.task_snapshot == ("not_reached", 1)


def test_busy_is_what_the_pbx_knows(env, pbx_harness):
    """During a live call the PBX reports the manager's desk phone and the
    call's channels, and the manager may not dial again; an old open row that
    Asterisk has no channel for (a crash, a forged request) blocks nobody."""
    import datetime as dt

    from sqlalchemy import select

    from khhf import bridge_client, db
    from khhf.models import Call, Manager, User, utcnow
    from khhf.services import ValidationError
    from khhf.services.dialing import request_call

    desk = pbx_harness.desk_phone("8002")
    customer = pbx_harness.trunk("answer_hangup.xml", duration_ms=4000)
    call_id = env.dial("8002", "13812340009")
    env.wait_state(call_id, "connected")
    with env.sessions() as s:
        linkedid = s.get(Call, call_id).linkedid
    live = bridge_client.live(env.settings)
    assert "8002" in live.endpoints and linkedid in live.linkedids
    other = env.task_for("8002", "13812340010")
    with db.unit_of_work(env.sessions) as s:
        user = s.scalar(select(User).where(User.username == "m8002"))
        with pytest.raises(ValidationError, match="already on a call"):
            request_call(s, env.settings, user, other, live=live)
    assert customer.wait(30) == 0 and desk.wait(30) == 0
    env.wait_final(call_id)

    # a stale row: open, ten minutes old, no channel anywhere
    with db.unit_of_work(env.sessions) as s:
        manager = s.scalar(select(Manager).where(Manager.desk_extension == "8002"))
        s.add(Call(direction="outbound", manager_id=manager.id, customer_number="13812340011",
                   state="manager_ringing", linkedid="khhf-999999-dead",
                   requested_at=utcnow() - dt.timedelta(minutes=10)))
    live = bridge_client.live(env.settings)
    assert "8002" not in live.endpoints
    with db.unit_of_work(env.sessions) as s:
        user = s.scalar(select(User).where(User.username == "m8002"))
        assert request_call(s, env.settings, user, other, live=live).id
        s.rollback()
