"""The two-leg call (双呼) end to end: the web-side dialing service -> the
bridge's command channel -> AMI Originate to the manager's MOBILE through the
carrier trunk -> the manager answers -> the customer is dialed through the
trunk -> AMI/CEL -> call row, recording and task. One SIPp plays the carrier
and, behind it, both the manager's mobile and the customer (told apart by the
INVITE's Request-URI number)."""

import pytest

from simkit.bridge_env import UNIFIED, BridgeEnv
from simkit.harness import wav_stats

CUSTOMER = "13812349001"
MOBILE = "13700008001"      # manager m8001's mobile (simkit.bridge_env)
TALK_MS = 3000


@pytest.fixture(scope="module")
def env(pbx_harness, tmp_path_factory):
    env = BridgeEnv(pbx_harness, tmp_path_factory.mktemp("bridge-mobile")).start()
    yield env
    env.stop()


def _invite_to(party, number):
    return [m for m in party.received("INVITE") if m.first_line.startswith(f"INVITE sip:{number}@")]


def test_two_leg_call_shows_only_the_unified_number_and_is_recorded(env, pbx_harness):
    carrier = pbx_harness.trunk("two_leg.xml", calls=2, duration_ms=TALK_MS,
                                fill={"MOBILE": MOBILE})
    call_id = env.dial("8001", CUSTOMER, device="mobile")
    assert carrier.wait(40) == 0, carrier.trace_summary()
    call = env.wait_final(call_id, recording=True)

    # first the manager's mobile, then the customer: both through the trunk
    invites = carrier.received("INVITE")
    assert [m.first_line.split("@")[0] for m in invites] == [
        f"INVITE sip:{MOBILE}", f"INVITE sip:{CUSTOMER}"], carrier.trace_summary()
    [to_mobile], [to_customer] = _invite_to(carrier, MOBILE), _invite_to(carrier, CUSTOMER)
    # the carrier sees the unified number on both legs
    for invite in (to_mobile, to_customer):
        assert f"sip:{UNIFIED}@" in invite.header("From")
        assert f"sip:{UNIFIED}@" in invite.header("P-Asserted-Identity")
    # and never the manager's own numbers on the customer's leg, in any header
    assert MOBILE not in to_customer.text, "the manager's mobile leaked to the customer"
    assert "8001" not in to_customer.text, "the manager's extension leaked to the customer"
    assert "经理" not in to_customer.text
    # nothing after the INVITEs told the carrier anything new (no identity update)
    later = [m for m in carrier.messages() if m.direction == "received"
             and m.method in ("INVITE", "UPDATE") and m not in invites]
    assert later == [], carrier.trace_summary()

    # the call row: a mobile call, answered, the customer hung up; recorded
    assert call.manager_device == "mobile"
    assert (call.state, call.outcome, call.hangup_by) == ("ended", "answered", "customer")
    assert call.unified_number == UNIFIED and call.customer_number == CUSTOMER
    assert 2 <= call.talk_seconds <= 4
    assert call.answer_at and call.ring_at and call.end_at
    assert abs(call.recording_seconds - TALK_MS / 1000) <= 0.5
    assert len(call.recording_sha256) == 64
    duration, rms = wav_stats(env.settings.recordings_dir / call.recording_path)
    assert rms > 500, f"recording is silent (RMS {rms:.0f})"
    # linked to the task exactly like a desk call: one attempt, result due
    assert call.task_snapshot == ("connected", 1)


@pytest.mark.parametrize("scenario, fill, outcome", [
    ("reject.xml", {"CODE": 486, "REASON": "Busy Here"}, "mobile_busy"),
    ("ring_forever.xml", None, "mobile_no_answer"),
    ("reject.xml", {"CODE": 503, "REASON": "Service Unavailable"}, "mobile_unreachable"),
])
def test_manager_mobile_not_reached(env, pbx_harness, scenario, fill, outcome):
    carrier = pbx_harness.trunk(scenario, fill=fill)
    call_id = env.dial("8001", CUSTOMER, device="mobile")
    assert carrier.wait(30) == 0, carrier.trace_summary()
    call = env.wait_final(call_id)
    assert (call.state, call.outcome) == ("failed", outcome)
    assert call.recording_path is None
    # only the mobile was rung: the customer never was, and no attempt is counted
    assert [m.first_line.split("@")[0] for m in carrier.received("INVITE")] == [
        f"INVITE sip:{MOBILE}"]
    assert call.task_snapshot == ("pending", 0)
