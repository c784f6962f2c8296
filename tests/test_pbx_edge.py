"""The SIP edge (Kamailio) in front of two real Asterisk nodes on loopback,
with their shared PostgreSQL (docs/cluster.md): the carrier's hotline calls
are dispatched over the nodes that answer OPTIONS; a node killed, the next
calls go to the other; a desk phone registered with the edge gets a node's
call through it. And the nodes' registry (khhf.services.nodes): a node
lost mid-call has its call closed as lost by the other's bridge, then
completed from its CEL when it returns; click-to-dial goes to a live node."""

import asyncio
import csv
import datetime as dt
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest
from sqlalchemy import func, select

from khhf.calls import events
from khhf.calls.states import FINAL_STATES
from khhf.channel_vars import TRUNK_ENDPOINT
from khhf.models import Call, CallEvent, PbxNode
from khhf.services import nodes
from khhfcli.status import check_edge
from simkit.bridge_env import BridgeEnv
from simkit.harness import EdgeHarness, PbxHarness, free_port

pytestmark = pytest.mark.pbx

UNIFIED = "13900000001"


def wait_until(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:g} s for {what}")
        time.sleep(0.05)


def carrier_calls(sipp) -> dict[str, dict]:
    """{Call-ID: {"invite": when the first INVITE left, "final": the final
    status, "node": the SIP port of the node whose Contact answered}} from
    the carrier's SIPp trace."""
    text = sipp.message_file.read_text(errors="replace").replace("\r\n", "\n")
    calls: dict[str, dict] = {}
    for stamp, direction, body in re.findall(
            r"^-{20,} (\S+ \S+)\n\S+ message (sent|received)[^\n]*\n\n?(.*?)(?=^-{20,} |\Z)",
            text, re.S | re.M):
        call_id = re.search(r"^Call-ID:\s*(\S+)", body, re.M | re.I).group(1)
        call = calls.setdefault(call_id, {"final": None, "node": None})
        first = body.split("\n", 1)[0]
        if direction == "sent" and first.startswith("INVITE "):
            call.setdefault("invite", dt.datetime.fromisoformat(stamp))
        status = re.match(r"SIP/2.0 (\d{3})", first)
        if direction == "received" and status and int(status.group(1)) >= 200 \
                and re.search(r"^CSeq:\s*\d+ INVITE", body, re.M):
            call["final"] = int(status.group(1))
            contact = re.search(r"^Contact:\s*<sip:[^>]*:(\d+)", body, re.M)
            call["node"] = int(contact.group(1)) if contact else None
    return calls


def originate(node, **fields) -> None:
    """An AMI Originate on `node`, as the bridge sends one."""
    async def run():
        client = node.ami(event_mask="off")
        await client.connect()
        try:
            first, _ = await client.send_tracked(
                {"Action": "Originate", "Async": "true", "Timeout": "10000", **fields},
                timeout=10)
            assert first.get("Response") == "Success", first
        finally:
            client.close()
    asyncio.run(run())


def final_status(from_ip: str, to: tuple[str, int], user: str) -> int:
    """Send one out-of-dialog INVITE for `user` from `from_ip`; its final status."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((from_ip, 0))
    sock.settimeout(5)
    port = sock.getsockname()[1]
    invite = (f"INVITE sip:{user}@{to[0]}:{to[1]} SIP/2.0\r\n"
              f"Via: SIP/2.0/UDP {from_ip}:{port};branch=z9hG4bK-{uuid.uuid4().hex}\r\n"
              f"From: <sip:13700001111@{from_ip}>;tag={uuid.uuid4().hex[:8]}\r\n"
              f"To: <sip:{user}@{to[0]}>\r\nCall-ID: {uuid.uuid4().hex}\r\n"
              f"CSeq: 1 INVITE\r\nContact: <sip:13700001111@{from_ip}:{port}>\r\n"
              f"Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
    try:
        sock.sendto(invite.encode(), to)
        while True:
            status = int(sock.recv(65535).split(b" ", 2)[1])
            if status >= 200:
                return status
    finally:
        sock.close()


def test_the_edge_dispatches_fails_over_and_reaches_phones(pg_database, tmp_path):
    url = pg_database("edge").url.render_as_string(hide_password=False)
    edge_port = free_port(span=3)
    with PbxHarness(tmp_path / "n1", name=f"edge1x{os.getpid()}", desk_extensions=["8001"],
                    **EdgeHarness.node_settings(url, edge_port)) as n1, \
            PbxHarness(tmp_path / "n2", name=f"edge2x{os.getpid()}", desk_extensions=["8001"],
                       **EdgeHarness.node_settings(url, edge_port)) as n2, \
            EdgeHarness(tmp_path / "edge", [n1, n2], desk_extensions=["8001"]) as edge:
        uri = {n: f"sip:127.0.0.1:{n.settings.sip_port}" for n in (n1, n2)}
        wait_until(lambda: set(edge.node_states().values()) == {"up"}, 30,
                   f"both nodes to answer the edge's OPTIONS: {edge.node_states()}")
        # only the carrier's address reaches a node, and only for a unified
        # number; anyone else is a phone that must authenticate; only the
        # nodes may use the edge's inner sockets
        edge_at = ("127.0.0.1", edge_port)
        assert final_status("127.0.0.1", edge_at, UNIFIED) == 407
        assert final_status("127.0.0.2", edge_at, "8001") == 404
        assert final_status("127.0.0.2", edge_at, "01012345678") == 404
        assert final_status("127.0.0.2", ("127.0.0.1", edge_port + 1), UNIFIED) == 403
        assert final_status("127.0.0.1", ("127.0.0.1", edge_port + 2), "8001") == 403
        status = subprocess.run([sys.executable, "-m", "khhfcli.main", "--config",
                                 str(edge.settings.config_path), "edge", "status"],
                                capture_output=True, text=True, timeout=60)
        assert status.returncode == 0 and "2 of 2 PBX nodes answer" in status.stdout, status
        # `khhf status` on the edge's machine: the edge's line
        check = check_edge(edge.settings)
        assert check.ok and "2 of 2 PBX nodes answer" in check.detail, check

        # click-to-dial on node 1: the desk phone, registered with the edge (in
        # PostgreSQL), then the customer through the edge to the carrier, who
        # sees the unified number as with one node
        carrier = edge.carrier(duration_ms=500)
        phone = edge.desk_phone("8001")
        originate(n1, Channel="PJSIP/8001", Context="khhf-outbound", Exten="13812345678",
                  Priority="1", Variable=f"KHHF_UNIFIED_NUMBER={UNIFIED}")
        assert carrier.wait(30) == 0, carrier.trace_summary()
        assert phone.wait(30) == 0, phone.trace_summary()
        invite = phone.received("INVITE")[0]
        assert f"127.0.0.1:{edge_port};" in invite.header("Via"), "sent by the edge"
        assert invite.header("Record-Route"), "the edge stays on the dialog's path"
        assert phone.received("BYE"), phone.trace_summary()
        invite = carrier.received("INVITE")[0]
        assert invite.first_line.startswith("INVITE sip:13812345678@127.0.0.2:")
        assert f"127.0.0.1:{edge_port};" in invite.header("Via"), "sent by the edge"
        assert f"<sip:{UNIFIED}@" in invite.header("From")
        assert f"<sip:{UNIFIED}@" in invite.header("P-Asserted-Identity")

        # the hotline: calls go round both nodes
        before = edge.hotline_calls(UNIFIED, calls=2, rate=4)
        assert before.wait(60) == 0, before.trace_summary()
        calls = carrier_calls(before)
        assert {c["final"] for c in calls.values()} == {200}, calls
        assert {c["node"] for c in calls.values()} == {n1.settings.sip_port,
                                                       n2.settings.sip_port}, calls

        # node 1 is killed (between calls: a node lost mid-call is not this
        # test's), calls keep coming: the edge notices, every call is answered
        killed = dt.datetime.now()
        t_kill = time.monotonic()
        os.kill(n1.pbx.pid(), signal.SIGKILL)
        during = edge.hotline_calls(UNIFIED, calls=8, rate=2)
        wait_until(lambda: edge.node_states()[uri[n1]] == "down", 30,
                   "the edge to mark the killed node down")
        noticed_after = time.monotonic() - t_kill
        noticed = killed + dt.timedelta(seconds=noticed_after)
        assert edge.node_states()[uri[n2]] == "up"
        check = check_edge(edge.settings)
        assert not check.ok and f"{uri[n1]} down" in check.detail and uri[n1] in check.todo
        assert during.wait(90) == 0, during.trace_summary()
        calls = carrier_calls(during)
        failed = {cid: c for cid, c in calls.items() if c["final"] != 200}
        after = [c for c in calls.values() if c["invite"] > noticed]
        print(f"edge noticed the killed node after {noticed_after:.2f} s; "
              f"{len(calls)} calls, {len(after)} after that, {len(failed)} failed")
        # no call failed: those sent to the dead node before the edge noticed
        # were failed over to node 2 (a time-out on the dispatcher's branch)
        assert failed == {}, failed
        assert after and {c["node"] for c in after} == {n2.settings.sip_port}, calls


# -- nodes that come and go (khhf.services.nodes) -----------------------------------------

def start_bridge(node) -> subprocess.Popen:
    """The node's AMI bridge daemon, as systemd runs it (a process to SIGKILL)."""
    log = open(node.workdir / "bridge.log", "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "ami_bridge", "--config",
                                 str(node.settings.config_path)], stdout=log, stderr=log)
    finally:
        log.close()


def cel_answered(node, linkedid: str) -> bool:
    """Whether the node's CEL record says the customer answered the call."""
    path = node.settings.pbx_dir / "log" / "cel-custom" / "khhf-cel.csv"
    if not path.exists():
        return False
    with open(path, newline="") as fh:
        rows = [dict(zip(events.CEL_COLUMNS, r)) for r in csv.reader(fh)]
    return any(r["eventtype"] == "ANSWER" and r["linkedid"] == linkedid
               and r["channame"].startswith(f"PJSIP/{TRUNK_ENDPOINT}-") for r in rows)


def test_a_node_lost_mid_call_is_closed_then_completed_and_dial_goes_to_a_live_node(
        pg_database, tmp_path):
    """Two nodes, each with its bridge (a process) beating into the registry.
    Click-to-dial lands on one; while the call rings and is answered, that
    node's bridge is frozen (its last beat) and then it is SIGKILLed with
    its Asterisk, the call up. The other node's bridge closes the row as
    lost within the bound; a dial now goes to the live node; the lost node
    restarts and its bridge completes the row from its CEL: the customer's
    answer, which no bridge stored before. One row throughout."""
    url = pg_database("nodes").url.render_as_string(hide_password=False)
    edge_port = free_port(span=3)
    desks = ["8001", "8002"]
    shared = {**EdgeHarness.node_settings(url, edge_port), "reconcile_seconds": 1,
              "bridge_token": secrets.token_hex(16)}

    def node_harness(i):
        return PbxHarness(tmp_path / f"n{i}", name=f"nodes{i}x{os.getpid()}", desk_extensions=desks,
                          bridge_port=free_port(kind=socket.SOCK_STREAM), **shared)
    with node_harness(1) as n1, node_harness(2) as n2, \
            EdgeHarness(tmp_path / "edge", [n1, n2], desk_extensions=desks) as edge:
        web = BridgeEnv(n1, tmp_path / "web", database_url=url)  # seeded; dials as the web does
        by_name = {n.settings.pbx_name: n for n in (n1, n2)}
        bridges = {name: start_bridge(n) for name, n in by_name.items()}

        def live_names():
            with web.sessions() as s:
                return {node.name for node, _ in nodes.live_nodes(s)}

        def call_row(call_id):
            with web.sessions() as s:
                call = s.get(Call, call_id)
                s.expunge(call)
                return call
        try:
            wait_until(lambda: live_names() == set(by_name), 30, "both nodes to beat")
            wait_until(lambda: set(edge.node_states().values()) == {"up"}, 30,
                       f"both nodes to answer the edge's OPTIONS: {edge.node_states()}")
            edge.carrier(duration_ms=30000, calls=2)
            edge.desk_phone("8001")
            edge.desk_phone("8002")

            # the call lands on a node (the least loaded; a tie goes by name),
            # whose bridge freezes at once: it stores nothing of the answer
            first = web.dial("8001", "13812345678")
            lost_name = call_row(first).pbx_node
            lost, live = by_name[lost_name], next(n for n in by_name.values()
                                                  if n.settings.pbx_name != lost_name)
            os.kill(bridges[lost_name].pid, signal.SIGSTOP)
            frozen = time.monotonic()  # its last beat: at most one beat before
            linkedid = call_row(first).linkedid
            wait_until(lambda: cel_answered(lost, linkedid), 30,
                       "the customer's answer in the node's CEL record")
            os.kill(lost.pbx.pid(), signal.SIGKILL)
            os.kill(bridges[lost_name].pid, signal.SIGKILL)
            bridges[lost_name].wait(10)

            # the surviving node's bridge closes it as lost, once
            closed = wait_until(lambda: (c := call_row(first)).state in FINAL_STATES and c,
                                nodes.LOST_AFTER.total_seconds() + 30, "the lost call closed")
            print(f"closed as lost {time.monotonic() - frozen:.1f} s after the node's bridge "
                  f"froze (bound: {nodes.LOST_AFTER.total_seconds():g} s after its last beat, "
                  f"+ {nodes.BEAT_SECONDS:g} s)")
            assert (closed.outcome, closed.answer_at) == ("lost", None), closed.__dict__
            with web.sessions() as s:
                assert s.get(PbxNode, lost_name).lost_by == live.settings.pbx_name

            # click-to-dial with one node lost: the live node carries it
            second = web.dial("8002", "13812345679")
            assert call_row(second).pbx_node == live.settings.pbx_name
            web.wait_state(second, "connected", 30)

            # the lost node returns: its bridge reads its CEL and completes the row
            lost.pbx.down()  # what SIGKILL left behind: its mounts
            lost.pbx.up()
            bridges[lost_name] = start_bridge(lost)
            wait_until(lambda: call_row(first).answer_at is not None, 30,
                       "the row completed from the returned node's CEL")
            wait_until(lambda: lost_name in live_names(), 30, "the node to beat again")
            done = call_row(first)
            assert (done.state, done.outcome) == ("ended", "lost"), done.__dict__
            with web.sessions() as s:
                assert s.scalar(select(func.count()).select_from(Call)
                                .where(Call.linkedid == linkedid)) == 1
                assert s.scalar(select(func.count()).select_from(CallEvent).where(
                    CallEvent.call_id == first, CallEvent.source == "cel")) > 0
                assert s.get(PbxNode, lost_name).lost_at is None
        finally:
            for process in bridges.values():
                if process.poll() is None:
                    os.kill(process.pid, signal.SIGKILL)
                    process.wait(10)
            web.engine.dispose()
