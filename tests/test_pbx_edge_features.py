"""What works on one node works through the SIP edge (docs/cluster.md,
issue 22), beyond what tests/test_pbx_edge.py proves (hotline, click-to-dial,
failover): a real Asterisk node behind Kamailio, its AMI bridge and FastAGI
service on PostgreSQL, and

1. the toll-fraud probes at the edge: a stranger is challenged and never
   relayed, a desk phone with its right password still cannot reach the
   carrier, and nothing arrives there;
2. the two-leg call (双呼): the manager's mobile, then the customer, both
   through the edge; the row is recorded and the recording review's file
   service opens the recording;
3. the keypad result: the desk phone, registered with the edge, hears the
   prompt straight from the node (media does not pass the edge) and its keys
   file the result;
4. with a second node (B) behind the edge: a call carried by B, the web
   UI of the first (A) rings the supervisor into a ChanSpy on B, and A's
   recording review plays the recording B made into its own directory.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest
from sqlalchemy import select

from agi.routes import ROUTES
from khhf import bridge_client, db
from khhf.config import agi_key
from khhf.models import Call, Feedback
from khhf.services import api_clients, nodes, recordings
from khhf.shipped import shipped
from pbxctl.pbx import phone_password
from simkit.bridge_env import UNIFIED, BridgeEnv
from simkit.harness import AgiThread, EdgeHarness, PbxHarness, free_port
from simkit.rtp import PCMU, RtpPhone
from simkit.sipp import SIPP_DIR
from simkit.web import csrf_token, log_in_as
from tests.test_live_browser import SUPERVISOR_DESK, arrange, spy_channels
from tests.test_pbx_edge import final_status, wait_until

pytestmark = pytest.mark.pbx

MOBILE = "13700008001"      # manager m8001's mobile (simkit.bridge_env)
PROMPTS = shipped("asterisk") / "sounds" / "zh"


def behind_the_edge(workdir: Path, scenario: str, first_responses: int, **replace) -> str:
    """A copy of a node-side answering scenario for a party behind the edge:
    its first responses to the INVITE carry the edge's Record-Route, so the
    rest of the dialog passes the edge too."""
    text = (SIPP_DIR / scenario).read_text()
    text = text.replace("[last_CSeq:]\n", "[last_CSeq:]\n[last_Record-Route:]\n", first_responses)
    for old, new in replace.items():
        assert old in text, (scenario, old)
        text = text.replace(old, new)
    path = workdir / f"edge-{scenario}"
    path.write_text(text)
    return str(path)


MOBILE_HANGS_UP = """  <nop next="done"/>
  <label id="hang_up"/>
  <send retrans="500">
    <![CDATA[
BYE [$peer_contact] SIP/2.0
Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]
[routes]
From: [$our_side]
To: [$their_side]
[last_Call-ID:]
CSeq: 2 BYE
Contact: <sip:[local_ip]:[local_port];transport=[transport]>
Max-Forwards: 70
Content-Length: 0

    ]]>
  </send>
  <recv response="200"/>
"""


def test_two_leg_keypad_toll_fraud_and_listen_in_across_nodes_through_the_edge(
        pg_database, tmp_path):
    url = pg_database("edgef").url.render_as_string(hide_password=False)
    edge_port, token = free_port(span=3), secrets.token_hex(16)
    node = PbxHarness(tmp_path / "n1", name=f"edgef{os.getpid()}", bridge_token=token,
                      **EdgeHarness.node_settings(url, edge_port))
    # the second node (part 4): its name sorts first, so with both idle it takes
    # the click; no FastAGI service (the keypad prompt's fallback: none)
    other = PbxHarness(tmp_path / "n2", name=f"edgeb{os.getpid()}", bridge_token=token,
                       **EdgeHarness.node_settings(url, edge_port))
    env = BridgeEnv(node, tmp_path, database_url=url)
    other_env = BridgeEnv(other, tmp_path / "n2-bridge", database_url=url, seed=False)
    agi = AgiThread(env.sessions, key=agi_key(node.settings), port=node.settings.agi_port,
                    routes=ROUTES).start()
    try:
        with node, other, EdgeHarness(tmp_path / "edge", [node, other],
                                      desk_extensions=["8001", "8002", SUPERVISOR_DESK]) as edge:
            env.start()
            try:
                wait_until(lambda: set(edge.node_states().values()) == {"up"}, 30,
                           f"the nodes to answer the edge's OPTIONS: {edge.node_states()}")
                wait_until(lambda: beating(env) == {node.settings.pbx_name}, 30,
                           "the node's bridge to beat into the registry")
                for part in (probes, two_leg, keypad):
                    part(edge, env, tmp_path)
                other_env.start()
                wait_until(lambda: len(beating(env)) == 2, 30,
                           "the second node's bridge to beat into the registry")
                across_nodes(edge, env, other_env, tmp_path)
            finally:
                other_env.stop()
                env.stop()
    finally:
        agi.stop()
        other_env.engine.dispose()
        env.engine.dispose()


def beating(env: BridgeEnv) -> set[str]:
    """The nodes click-to-dial may choose (click-to-dial goes to a node that beats)."""
    with env.sessions() as s:
        return {n.name for n, _ in nodes.live_nodes(s)}


def probes(edge: EdgeHarness, env: BridgeEnv, tmp_path: Path) -> None:
    carrier = edge.carrier("edge_answer.xml")
    edge_at = (edge.settings.edge_host, edge.settings.edge_port)
    # a stranger's INVITE to a customer or to a premium number is challenged
    # as a desk phone would be, never relayed
    assert final_status("127.0.0.3", edge_at, "13812345678") == 407
    assert final_status("127.0.0.3", edge_at, "00881234567") == 407
    # a desk phone with its right password: still not the carrier
    port = edge.register_desk_phone("8002")
    for number in ("13812345678", "00881234567"):
        dialer = edge.party(behind_the_edge(tmp_path, "dial.xml", 0,
                                            **{'response="401"': 'response="407"'}),
                            local_ip="127.0.0.1", port=port, remote=edge.sip_target,
                            service=number, keys={"caller": "8002"},
                            auth=("8002", phone_password(edge.settings, "8002"))).start()
        assert dialer.wait(20) == 0, dialer.trace_summary()
        final = [m.status for m in dialer.messages() if m.direction == "received"
                 and (m.status or 0) >= 400 and m.status != 407]
        assert final == [403], dialer.trace_summary()
    carrier.stop()
    assert carrier.received("INVITE") == [], "a probe reached the carrier"


def two_leg(edge: EdgeHarness, env: BridgeEnv, tmp_path: Path) -> None:
    scenario = behind_the_edge(
        tmp_path, "two_leg.xml", 2,
        **{'<recv request="INVITE" crlf="true">': '<recv request="INVITE" crlf="true" rrs="true">',
           "branch=[branch]\nFrom: [$our_side]": "branch=[branch]\n[routes]\nFrom: [$our_side]",
           # the manager hangs the mobile up 4 s after answering, as one who
           # keys no result (the keypad prompt would wait 30 s for one)
           '<recv request="BYE"/>': '<recv request="BYE" timeout="4000" ontimeout="hang_up"/>',
           '  <label id="done"/>': MOBILE_HANGS_UP + '  <label id="done"/>'})
    carrier = edge.carrier(scenario, calls=2, duration_ms=1000, fill={"MOBILE": MOBILE})
    call_id = env.dial("8001", "13812349001", device="mobile")
    assert carrier.wait(40) == 0, carrier.trace_summary()
    invites = carrier.received("INVITE")
    assert [m.first_line.split("@")[0] for m in invites] == [
        f"INVITE sip:{MOBILE}", "INVITE sip:13812349001"], carrier.trace_summary()
    for invite in invites:
        assert f"{edge.sip_target};" in invite.header("Via"), "sent by the edge"
        assert f"sip:{UNIFIED}@" in invite.header("From")
        assert f"sip:{UNIFIED}@" in invite.header("P-Asserted-Identity")
    call = env.wait_final(call_id, recording=True)
    assert call.manager_device == "mobile"
    assert (call.state, call.outcome, call.hangup_by) == ("ended", "answered", "customer")
    # the recording stays on the node that recorded it; the review (on that
    # node's machine) opens it
    fh, info, content_type = recordings.open_file(env.settings, call)
    with fh:
        assert fh.read(4) == b"RIFF" and info.st_size > 8000 and content_type == "audio/wav"


def keypad(edge: EdgeHarness, env: BridgeEnv, tmp_path: Path) -> None:
    phone = RtpPhone(codec=PCMU)
    try:
        port = edge.register_desk_phone("8001")
        desk = edge.party(behind_the_edge(tmp_path, "answer_media.xml", 1),
                          local_ip="127.0.0.1", port=port,
                          keys={"ear_ip": phone.host, "ear_port": phone.port},
                          fill={"PT": PCMU, "CODEC": "PCMU"}).start()
        customer = edge.carrier(duration_ms=1000)
        call_id = env.dial("8001", "13812349002")
        assert customer.wait(30) == 0, customer.trace_summary()
        assert phone.wait_heard(PROMPTS / "keypad-ask.ulaw"), f"{len(phone.audio())} bytes"
        phone.press("1")
        assert phone.wait_heard(PROMPTS / "keypad-confirm.ulaw")
        phone.press("1")
        assert phone.wait_heard(PROMPTS / "keypad-filed.ulaw")
        assert desk.wait(30) == 0, desk.trace_summary()
        assert desk.received("INVITE")[0].header("Record-Route"), "the edge stays on the path"
    finally:
        phone.close()
    env.wait_final(call_id)
    with env.sessions() as s:
        [fb] = s.scalars(select(Feedback).where(Feedback.call_id == call_id)).all()
        assert fb.channel == "keypad"


def across_nodes(edge: EdgeHarness, web: BridgeEnv, node_b: BridgeEnv, tmp_path: Path) -> None:
    """Listen-in and the recording review across nodes (docs/cluster.md): a
    call carried by node B (node_b), and the web UI of node A (web, a Flask
    test client). A's web UI rings the supervisor's desk phone (a SIPp
    registered with the edge) into a ChanSpy on B, where the call is; the
    call's recording, made into B's recordings directory (not A's), plays in
    A's review, handed over by B's bridge, which refuses any name that leads
    outside its recordings directory."""
    ids = arrange(web)
    app, _password = web.web_app("sup")
    try:
        listen_and_review(app, edge, web, node_b, ids, tmp_path)
    finally:
        app.extensions["khhf_engine"].dispose()


def listen_and_review(app, edge, web, node_b, ids, tmp_path) -> None:
    b = node_b.settings
    client = app.test_client()
    log_in_as(client, app, "sup")
    token = csrf_token(client, "/customers/")

    supervisor = edge.desk_phone(SUPERVISOR_DESK, behind_the_edge(tmp_path, "listen_phone.xml", 2),
                                 keys={"rtp_port": free_port()})
    desk = edge.desk_phone("8001")
    customer = edge.carrier(duration_ms=5000)  # the spy is checked while it talks
    call_id = web.dial("8001", "13812349003")
    with web.sessions() as s:
        assert s.get_one(Call, call_id).pbx_node == b.pbx_name
    web.wait_state(call_id, "connected")

    # 1. A's web UI rings the supervisor into the spy on B
    answer = client.post(f"/live/listen/{ids['m8001']}", data={"mode": "listen"},
                         headers={"Accept": "application/json", "X-CSRFToken": token})
    assert answer.status_code == 200, answer.get_json()
    wait_until(lambda: supervisor.received("INVITE"), 20, "the supervisor's phone to ring")
    spies = wait_until(lambda: {name: data for name, (app_name, data)
                                in spy_channels(node_b.harness).items() if app_name == "ChanSpy"},
                       20, "the spy on node B")
    assert list(spies.values()) == ["PJSIP/8001-,qES"], spies
    assert next(iter(spies)).startswith(f"PJSIP/{SUPERVISOR_DESK}-")
    assert customer.wait(30) == 0, customer.trace_summary()
    assert desk.wait(30) == 0, desk.trace_summary()
    assert supervisor.wait(30) == 0, supervisor.trace_summary()

    # 2. the recording, made on B into B's directory, plays in A's review
    call = web.wait_final(call_id, recording=True)
    assert not (web.settings.recordings_dir / call.recording_path).exists()
    assert (node_b.settings.recordings_dir / call.recording_path).is_file()
    page = client.get(f"/recordings/{call_id}").get_data(as_text=True)
    assert 'id="player"' in page and 'id="recording-status"' not in page, page
    played = client.post(f"/recordings/{call_id}/play",
                         headers={"Accept": "application/json", "X-CSRFToken": token})
    assert played.status_code == 200, played.get_data(as_text=True)
    kept = (node_b.settings.recordings_dir / call.recording_path).read_bytes()
    with client.get(played.get_json()["url"]) as audio:
        assert audio.status_code == 200 and audio.data[:4] == b"RIFF", audio.status
        assert audio.data == kept
    with client.get(played.get_json()["url"], headers={"Range": "bytes=4-11"}) as part:
        assert part.status_code == 206 and part.data == kept[4:12]
    # the open API finds it the same way
    with db.unit_of_work(web.sessions) as s:
        _, api_token = api_clients.create(s, None, "", name="crm", county_code="demo",
                                          operations=["recordings:read"])
    with app.test_client().get(f"/api/v1/calls/{call_id}/recording",
                               headers={"Authorization": f"Bearer {api_token}"}) as fetched:
        assert fetched.status_code == 200 and fetched.data == kept, fetched.status

    # B's bridge hands out nothing outside its recordings directory
    with web.sessions() as s:
        target = nodes.node_target(s, web.settings, b.pbx_name)
    assert target is not None and target.bridge_port == b.bridge_port
    for name in ("../khhf.conf", str(b.config_path), "../../etc/passwd"):
        with pytest.raises(bridge_client.RecordingRefused) as refused:
            bridge_client.recording(target, name)
        assert refused.value.reason == "refused", name
    with pytest.raises(bridge_client.RecordingRefused) as refused:
        bridge_client.recording(target, "2020/01/01/none.wav")
    assert refused.value.reason == "missing"

    # B's bridge stops (its node not yet judged lost): clear answers, no 500
    node_b.stop()
    page = client.get(f"/recordings/{call_id}").get_data(as_text=True)
    assert 'data-recording-status="unreachable"' in page and b.pbx_name in page, page
    assert client.get(played.get_json()["url"]).status_code == 503
    answer = client.post(f"/live/listen/{ids['m8001']}", data={"mode": "listen"},
                         headers={"Accept": "application/json", "X-CSRFToken": token})
    assert answer.status_code == 409 and "没有座机通话" in answer.get_json()["message"]
