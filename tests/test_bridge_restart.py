"""No call is lost when the bridge dies during live calls: after a restart,
the reconciler completes every row from the CEL record Asterisk kept."""

import os
import signal
import time

from sqlalchemy import select

from ami_bridge.bridge import _by_call
from khhf.models import Call, User
from khhf.services.dialing import request_call
from simkit.bridge_env import BridgeEnv
from simkit.harness import PbxHarness

TALK_MS = 4000


def test_bridge_killed_during_live_calls(pbx_harness, tmp_path):
    env = BridgeEnv(pbx_harness, tmp_path).start()
    try:
        phones = [pbx_harness.desk_phone(ext) for ext in ("8001", "8002", "8003")]
        customers = pbx_harness.trunk("answer_hangup.xml", duration_ms=TALK_MS, calls=3)
        calls = [env.dial(ext, f"1391234000{i}") for i, ext in enumerate(("8001", "8002", "8003"))]
        # all three connected, as the live bridge saw it
        deadline = time.monotonic() + 20
        while True:
            with env.sessions() as s:
                states = [s.get(Call, c).state for c in calls]
            if states == ["connected"] * 3:
                break
            assert time.monotonic() < deadline, states
            time.sleep(0.05)
        env.kill()
        assert customers.wait(30) == 0, customers.trace_summary()
        for phone in phones:
            assert phone.wait(30) == 0
        with env.sessions() as s:
            assert [s.get(Call, c).state for c in calls] == ["connected"] * 3, \
                "the rows must still be open: nobody wrote the hang-ups"
        env.start()  # a new bridge, on the same database
        for call_id in calls:
            call = env.wait_final(call_id, recording=True)
            assert (call.state, call.outcome, call.hangup_by) == ("ended", "answered", "customer")
            assert abs(call.talk_seconds - TALK_MS / 1000) <= 1
            assert abs(call.recording_seconds - TALK_MS / 1000) <= 0.5
            assert call.task_snapshot == ("connected", 1)
    finally:
        env.stop()


def test_calls_lost_in_an_asterisk_crash_are_closed(tmp_path):
    """Asterisk killed mid-call writes no end, not even to CEL: once it is
    back, the channel snapshot shows the call gone, and the row is closed."""
    with PbxHarness(tmp_path / "pbx", name=f"crash{os.getpid()}") as harness:
        env = BridgeEnv(harness, tmp_path).start()
        try:
            harness.desk_phone("8001")
            harness.trunk("answer_hangup.xml", duration_ms=60000)
            call_id = env.dial("8001", "13912345000")
            deadline = time.monotonic() + 20
            while True:
                with env.sessions() as s:
                    if s.get(Call, call_id).state == "connected":
                        break
                assert time.monotonic() < deadline
                time.sleep(0.05)
            os.kill(harness.pbx.pid(), signal.SIGKILL)
            harness.pbx.down()
            harness.pbx.up()
            call = env.wait_final(call_id, timeout=60)
            assert (call.state, call.outcome) == ("ended", "lost")
            assert call.task_snapshot[0] == "connected"
            # and the manager may call again
            next_task = env.task_for("8001", "13912345001")
            with env.sessions() as s:
                user = s.scalar(select(User).where(User.username == "m8001"))
                request_call(s, env.settings, user, next_task)
                s.rollback()
        finally:
            env.stop()



def test_the_reconciler_stores_cel_in_chunks_that_never_split_a_call():
    """The CEL catch-up commits in chunks (the live batches wait for one, not
    for the pass), each call's rows in one chunk and in their order."""
    rows = [{"linkedid": f"khhf-{n % 7}", "seq": n} for n in range(40)]
    chunks = _by_call(rows, 10)
    assert len(chunks) > 1
    assert sorted(r["seq"] for c in chunks for r in c) == list(range(40))
    for chunk in chunks:
        for linkedid in {r["linkedid"] for r in chunk}:
            assert [r["seq"] for r in chunk if r["linkedid"] == linkedid] == \
                [r["seq"] for r in rows if r["linkedid"] == linkedid]
