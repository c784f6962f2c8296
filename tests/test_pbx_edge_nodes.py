"""Listen-in and the recording review across the nodes behind the SIP edge
(docs/cluster.md, issue 22): two real Asterisk nodes behind Kamailio, each
with its AMI bridge beating into the registry, one PostgreSQL, and the web
UI of node A. A manager's call is carried by node B; from A's web UI

1. the supervisor's listen-in rings the supervisor's desk phone (a SIPp
   registered with the edge) into a ChanSpy on node B, the node whose
   Asterisk has the call (ChanSpy sees only its own PBX's channels);
2. the call's recording, made on B into B's recordings directory (not A's),
   plays in A's recording review: B's bridge hands it over by its stored
   name, and refuses any name that leads outside its recordings directory.
"""

from __future__ import annotations

import os
import secrets

import pytest

from khhf import bridge_client
from khhf.models import Call, PbxNode
from khhf.services import nodes
from simkit.bridge_env import BridgeEnv
from simkit.harness import EdgeHarness, PbxHarness, free_port
from simkit.web import csrf_token, log_in_as
from tests.test_live_browser import SUPERVISOR_DESK, arrange, spy_channels
from tests.test_pbx_edge import wait_until
from tests.test_pbx_edge_features import behind_the_edge

pytestmark = pytest.mark.pbx

CUSTOMER = "13812345678"


def test_listen_in_and_recording_review_reach_the_node_that_carries_the_call(
        pg_database, tmp_path):
    url = pg_database("edgen").url.render_as_string(hide_password=False)
    shared = {**EdgeHarness.node_settings(url, free_port(span=3)),
              "bridge_token": secrets.token_hex(16)}
    # B's name sorts first: with both nodes idle, click-to-dial takes it
    b = PbxHarness(tmp_path / "b", name=f"lsn1x{os.getpid()}", **shared)
    a = PbxHarness(tmp_path / "a", name=f"lsn2x{os.getpid()}", **shared)
    web = BridgeEnv(a, tmp_path / "web-a", database_url=url)    # node A: seeded; the web UI
    node_b = BridgeEnv(b, tmp_path / "web-b", database_url=url, seed=False)
    try:
        with a, b, EdgeHarness(tmp_path / "edge", [a, b],
                               desk_extensions=["8001", SUPERVISOR_DESK]) as edge:
            web.start()
            node_b.start()
            try:
                ids = arrange(web)
                wait_until(lambda: beating(web) == {a.settings.pbx_name, b.settings.pbx_name},
                           30, "both nodes' bridges to beat into the registry")
                across_nodes(edge, web, node_b, b, ids, tmp_path)
            finally:
                node_b.stop()
                web.stop()
    finally:
        node_b.engine.dispose()
        web.engine.dispose()


def beating(env: BridgeEnv) -> set[str]:
    with env.sessions() as s:
        return {node.name for node, _ in nodes.live_nodes(s)}


def across_nodes(edge, web, node_b, b, ids, tmp_path) -> None:
    app, _password = web.web_app("sup")
    try:
        listen_and_review(app, edge, web, node_b, b, ids, tmp_path)
    finally:
        app.extensions["khhf_engine"].dispose()


def listen_and_review(app, edge, web, node_b, b, ids, tmp_path) -> None:
    client = app.test_client()
    log_in_as(client, app, "sup")
    token = csrf_token(client, "/customers/")

    supervisor = edge.desk_phone(SUPERVISOR_DESK, behind_the_edge(tmp_path, "listen_phone.xml", 2),
                                 keys={"rtp_port": free_port()})
    desk = edge.desk_phone("8001")
    customer = edge.carrier(duration_ms=6000)
    call_id = web.dial("8001", CUSTOMER)
    with web.sessions() as s:
        assert s.get_one(Call, call_id).pbx_node == b.settings.pbx_name
    web.wait_state(call_id, "connected")

    # 1. A's web UI rings the supervisor into the spy on B
    answer = client.post(f"/live/listen/{ids['m8001']}", data={"mode": "listen"},
                         headers={"Accept": "application/json", "X-CSRFToken": token})
    assert answer.status_code == 200, answer.get_json()
    wait_until(lambda: supervisor.received("INVITE"), 20, "the supervisor's phone to ring")
    spies = wait_until(lambda: {name: data for name, (app_name, data) in spy_channels(b).items()
                                if app_name == "ChanSpy"}, 20, "the spy on node B")
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

    # B's bridge hands out nothing outside its recordings directory
    with web.sessions() as s:
        target = nodes.node_target(s, web.settings, b.settings.pbx_name)
        assert target is not None and s.get(PbxNode, b.settings.pbx_name).bridge_port == \
            node_b.settings.bridge_port
    for name in ("../khhf.conf", str(b.settings.config_path), "../../etc/passwd"):
        with pytest.raises(bridge_client.RecordingRefused) as refused:
            bridge_client.recording(target, name)
        assert refused.value.reason == "refused", name
    with pytest.raises(bridge_client.RecordingRefused) as refused:
        bridge_client.recording(target, "2020/01/01/none.wav")
    assert refused.value.reason == "missing"
