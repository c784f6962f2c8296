"""End to end through a real Asterisk: AMI Originate rings the manager's desk
phone (SIPp), then dials the customer through the carrier trunk (SIPp)
showing the county's unified number, and MixMonitor records the call."""

import asyncio
import datetime as dt

from ami_bridge.originate import OutboundCall, originate_action
from simkit.harness import wav_stats

UNIFIED = "13900000000"
CUSTOMER = "13812345678"
TALK_MS = 4000


def test_originate_bridges_manager_to_customer_with_unified_number(pbx_harness):
    h = pbx_harness
    desk = h.desk_phone("8001")
    customer = h.trunk("answer_hangup.xml", duration_ms=TALK_MS)
    rec_file = f"{dt.date.today():%Y/%m/%d}/e2e-1.wav"
    call = OutboundCall(call_id=1, channel_id="khhf-1-e2e", task_id=7, desk_extension="8001", customer_number=CUSTOMER,
                        unified_number=UNIFIED, recording_file=rec_file)

    async def place():
        ami = h.ami()
        await ami.connect()
        try:
            response = await ami.action(originate_action(call), timeout=30)
            # Async originate: the response, then OriginateResponse once answered
            responses = response if isinstance(response, list) else [response]
            assert responses[0].success, responses[0]
            return responses
        finally:
            ami.close()

    responses = asyncio.run(place())
    assert any(r.event == "OriginateResponse" and r.response == "Success" for r in responses)
    assert customer.wait(30) == 0, customer.trace_summary()
    assert desk.wait(30) == 0, desk.trace_summary()

    # the desk phone was rung first, and shown the customer it will reach
    desk_invite = desk.received("INVITE")[0]
    assert CUSTOMER in desk_invite.header("From")

    # the carrier saw the unified number, and nothing of the manager's
    [invite] = customer.received("INVITE")
    assert invite.first_line.startswith(f"INVITE sip:{CUSTOMER}@")
    assert f"sip:{UNIFIED}@" in invite.header("From")
    assert f"sip:{UNIFIED}@" in invite.header("P-Asserted-Identity")
    assert "8001" not in invite.text, "the manager's extension leaked to the carrier"

    # the recording has audio (not silence) and lasts the talk time (±0.5 s)
    path = h.settings.recordings_dir / rec_file
    for _ in range(50):  # MixMonitor closes the file just after hang-up
        if path.exists() and path.stat().st_size > 44:
            break
        asyncio.run(asyncio.sleep(0.1))
    duration, rms = wav_stats(path)
    assert abs(duration - TALK_MS / 1000) <= 0.5, f"recording lasts {duration:.2f} s"
    assert rms > 500, f"recording is silent (RMS {rms:.0f})"


def test_desk_phone_cannot_dial_external_number(pbx_harness):
    h = pbx_harness
    trunk = h.trunk("answer.xml")
    port = h.register_desk_phone("8002")
    from pbxctl.pbx import phone_password
    dialer = h.party("dial.xml", local_ip="127.0.0.1", port=port, remote=h.sip_target,
                     service=CUSTOMER, auth=("8002", phone_password(h.settings, "8002")),
                     keys={"caller": "8002"}).start()
    assert dialer.wait(20) == 0, dialer.trace_summary()
    final = [m for m in dialer.messages() if m.direction == "received" and (m.status or 0) >= 400
             and m.status not in (401, 407)]
    assert final and final[-1].status in (403, 404), dialer.trace_summary()
    # and nothing reached the carrier
    trunk.stop()
    assert trunk.received("INVITE") == []
