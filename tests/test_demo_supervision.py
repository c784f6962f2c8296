"""The demo stays alive: `khhf demo run` supervises its children as systemd
would. A killed desk phone comes back registered and a later call connects;
a killed AMI bridge comes back while the call goes on, and the restarted
bridge completes its row; no SIPp party has a run limit (SIPp's -timeout,
once 120 s, stopped the demo's phones answering), and the last call still
connects. One demo serves the module's tests, in file order; Ctrl-C stops
it cleanly at the end."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest
from sqlalchemy import create_engine, text

from simkit.demo_client import RunningDemo, WebUser, demo_env

TALK = 6  # seconds a simulated customer talks


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    home = tmp_path_factory.mktemp("demo")
    env = demo_env(home)
    khhf = [sys.executable, "-m", "khhfcli.main"]
    subprocess.run(khhf + ["init", "--home", str(home)], env=env, check=True,
                   capture_output=True)
    running = RunningDemo(khhf + ["demo", "run", "--talk", str(TALK)], home, env)
    try:
        running.ready()
        running.carrier = running.child_pid("answer_hangup.xml", "127.0.0.2")
        running.engine = create_engine(f"sqlite:///{home / 'khhf.db'}")
        yield running
    finally:
        children = running.children()
        rc = running.interrupt()
        if hasattr(running, "engine"):
            running.engine.dispose()
    assert rc == 0, running.printed()
    left = [pid for pid in children if _alive(pid)]
    assert not left, f"children left running after Ctrl-C: {left}"
    status = subprocess.run(khhf + ["pbx", "status"], env=env, capture_output=True, text=True)
    assert status.returncode == 1 and "not running" in status.stderr


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _call_row(demo, call_id: int):
    with demo.engine.connect() as conn:
        return conn.execute(text("SELECT state, outcome, answer_at, end_at, talk_seconds "
                                 "FROM calls WHERE id = :id"), {"id": call_id}).one()


def _wait_row(demo, call_id: int, done, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not done(row := _call_row(demo, call_id)):
        assert time.monotonic() < deadline, row
        time.sleep(0.2)
    return row


def test_no_party_has_a_run_limit(demo):
    sipps = [argv for argv in demo.children().values() if argv and argv[0].endswith("sipp")]
    # three managers' desk phones, the supervisor's (the live view's listen-in) and the carrier
    assert len(sipps) == 5, demo.children()
    for argv in sipps:
        # SIPp's -timeout (once 120 s) or -m would stop a party in a long demo
        assert "-timeout" not in argv and "-m" not in argv, argv


def test_killed_desk_phone_comes_back_and_a_later_call_connects(demo):
    port = str(demo.phone_ports["8001"])   # manager1's desk phone
    pid = demo.child_pid("answer_hangup.xml", port)
    mark = len(demo.printed())
    os.kill(pid, signal.SIGKILL)
    demo.wait_for(r"desk phone 8001 exited \(killed by signal 9\); restarting", start=mark)
    demo.wait_for(r"desk phone 8001 restarted", start=mark)
    assert demo.child_pid("answer_hangup.xml", port) != pid

    call_id = WebUser(demo.url, "manager1", demo.passwords["manager1"]).dial()
    row = _wait_row(demo, call_id, lambda r: r.state == "ended")
    assert row.outcome == "answered", row
    assert row.answer_at is not None


def test_killed_bridge_comes_back_and_completes_the_live_call(demo):
    call_id = WebUser(demo.url, "manager2", demo.passwords["manager2"]).dial()
    _wait_row(demo, call_id, lambda r: r.state == "connected")
    bridge = demo.child_pid("ami_bridge")
    mark = len(demo.printed())
    os.kill(bridge, signal.SIGKILL)
    demo.wait_for(r"ami_bridge exited \(killed by signal 9\); restarting", start=mark)
    demo.wait_for(r"ami_bridge restarted", start=mark)
    # the restarted bridge closes the row when the customer hangs up
    row = _wait_row(demo, call_id, lambda r: r.state == "ended")
    assert row.outcome == "answered", row
    # the call was not cut by the bridge's death: it lasted until the
    # simulated customer hung up after TALK seconds
    assert row.talk_seconds >= TALK - 1, row
    assert demo.child_pid("answer_hangup.xml", "127.0.0.2") == demo.carrier  # the carrier never died


def test_killed_asterisk_comes_back_and_phones_register_again(demo):
    asterisk = demo.child_pid("-f", "-n")
    mark = len(demo.printed())
    os.kill(asterisk, signal.SIGKILL)
    demo.wait_for(r"Asterisk \(PBX\) exited \(killed by signal 9\); restarting", start=mark)
    demo.wait_for(r"Asterisk \(PBX\) restarted", start=mark)
    for ext in ("8001", "8002", "8003"):
        demo.wait_for(rf"desk phone {ext} restarted", start=mark)
    demo.wait_pbx_known()  # the bridge's AMI link is back (until then a dial gets 503)
    call_id = WebUser(demo.url, "manager1", demo.passwords["manager1"]).dial()
    row = _wait_row(demo, call_id, lambda r: r.state == "ended")
    assert row.outcome == "answered", row


def test_the_last_call_still_connects_and_only_the_killed_parts_died(demo):
    # the carrier has run since the start, never restarted
    assert demo.child_pid("answer_hangup.xml", "127.0.0.2") == demo.carrier
    call_id = WebUser(demo.url, "manager3", demo.passwords["manager3"]).dial()
    row = _wait_row(demo, call_id, lambda r: r.state == "ended")
    assert row.outcome == "answered", row
    after_start = demo.printed().split("press Ctrl-C", 1)[1]
    died = set(re.findall(r"khhf demo: (.+?) exited", after_start))
    assert died == {"desk phone 8001", "ami_bridge", "Asterisk (PBX)"}, demo.printed()
