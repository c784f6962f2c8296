"""The SIP edge (Kamailio) in front of two real Asterisk nodes on loopback,
with their shared PostgreSQL (docs/cluster.md): the carrier's hotline calls
are dispatched over the nodes that answer OPTIONS; a node killed, the next
calls go to the other; a desk phone registered with the edge gets a node's
call through it."""

import asyncio
import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid

import pytest

from khhfcli.status import check_edge
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
