"""The task state machine (khhf.services.tasks): its table and its moves as
calls end (that nothing else writes a task's status: test_single_writer.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
from sqlalchemy import select

from ami_bridge.bridge import Bridge
from khhf import db
from khhf.calls import events, store
from khhf.models import Call, CallEvent, ResultCode, Task, TaskStatus, User
from khhf.services import tasks
from khhf.services.dialing import mark_not_placed, request_call
from simkit.bridge_env import BridgeEnv, NoPbx

ROOT = Path(__file__).resolve().parent.parent
NOON = dt.datetime(2026, 11, 27, 3, 0)


# -- the table -------------------------------------------------------------------------
@pytest.mark.parametrize("status,event,to", [
    ("pending", "dial", "dialing"), ("not_reached", "dial", "dialing"),
    ("connected", "dial", "dialing"), ("dialing", "call_progress", "connected"),
    ("dialing", "call_ended", "not_reached"), ("dialing", "call_ended", "pending"),
    ("connected", "call_ended", "connected"), ("connected", "file_result", "done"),
    ("pending", "file_result", "not_reached"), ("done", "reopen", "pending"),
    ("cancelled", "reopen", "pending"), ("not_reached", "cancel", "cancelled"),
])
def test_allowed_moves(status, event, to):
    assert to in tasks.allowed(status, event)


@pytest.mark.parametrize("status,event", [
    ("done", "dial"), ("cancelled", "dial"), ("dialing", "dial"), ("done", "file_result"),
    ("cancelled", "call_ended"), ("pending", "call_ended"), ("pending", "reopen"),
    ("done", "cancel"), ("done", "call_progress"),
])
def test_refused_moves(status, event):
    assert tasks.allowed(status, event) == ()
    task = Task(id=1, status=status)
    with pytest.raises(tasks.TransitionError, match=f"{event} may not move it from {status}"):
        tasks._move(task, event, "pending")


def test_every_status_is_in_the_schema_and_every_status_can_be_left():
    schema = (ROOT / "schema.sql").read_text()
    for status in TaskStatus:
        assert f"'{status}'" in schema
        assert any(frm == status for frm, _ in tasks.TRANSITIONS), status


def test_a_final_code_closes_and_a_try_again_code_books_or_retries():
    final = ResultCode(id=1, code="1", label="回访成功", is_final=True)
    again = ResultCode(id=2, code="6", label="预约再拨", is_final=False)
    task = Task(id=1, status="connected", attempts=1, max_attempts=3)
    tasks.file_result(task, again, appointment_at=NOON)
    assert (task.status, task.appointment_at) == ("pending", NOON)
    tasks.file_result(task, again)
    assert (task.status, task.appointment_at) == ("not_reached", None)
    task.attempts = 3  # used up: a try-again code with no appointment closes it
    tasks.file_result(task, again)
    assert task.status == "done" and task.result_code_id == 2
    tasks.reopen(task)
    tasks.file_result(task, final)
    assert (task.status, task.result_code_id) == ("done", 1)


# -- moves as calls end ----------------------------------------------------------------
@pytest.fixture
def env(tmp_path):
    return BridgeEnv(NoPbx(tmp_path), tmp_path)  # database and seed only


def _dial(env, task_id, now=NOON) -> int:
    with db.unit_of_work(env.sessions) as s:
        user = s.scalar(select(User).where(User.username == "m8001"))
        return request_call(s, env.settings, user, task_id, now=now).id


def _ami_events(env, call_id, *events_) -> list[dict]:
    """AMI events (name, channel, extra headers) of the call, a second apart."""
    with env.sessions() as s:
        call = s.get(Call, call_id)
        t = call.requested_at.replace(tzinfo=dt.timezone.utc).timestamp()
        return [{"Event": name, "Channel": channel, "Uniqueid": f"{call.linkedid}-{i}",
                 "Linkedid": call.linkedid, "Timestamp": f"{t + i + 1:.6f}", **extra}
                for i, (name, channel, extra) in enumerate(events_)]


def _ami(env, call_id, *events_):
    """Feed AMI events (name, channel, extra headers) for the call, in order."""
    raws = _ami_events(env, call_id, *events_)
    with db.unit_of_work(env.sessions) as s:
        changed = store.store_events(s, [store.raw_from_ami(r) for r in raws])
        for cid in changed:
            store.recompute(s, cid)


def _task(env, task_id) -> Task:
    with env.sessions() as s:
        task = s.get(Task, task_id)
        s.expunge(task)
        return task


DESK, TRUNK = "PJSIP/8001-00000001", "PJSIP/carrier-00000002"
ANSWERED = [("Newchannel", DESK, {}), ("Newstate", DESK, {"ChannelStateDesc": "Up"}),
            ("Newchannel", TRUNK, {}), ("Newstate", TRUNK, {"ChannelStateDesc": "Up"}),
            ("Hangup", TRUNK, {"Cause": "16"}), ("Hangup", DESK, {"Cause": "16"})]
BUSY = [("Newchannel", DESK, {}), ("Newstate", DESK, {"ChannelStateDesc": "Up"}),
        ("Newchannel", TRUNK, {}), ("Hangup", TRUNK, {"Cause": "17"}),
        ("Hangup", DESK, {"Cause": "16"})]


def test_answered_then_busy_then_not_placed(env):
    task_id = env.task_for("8001", "13812345678")
    first = _dial(env, task_id)
    assert _task(env, task_id).status == "dialing"
    _ami(env, first, *ANSWERED[:4])
    assert _task(env, task_id).status == "connected"
    _ami(env, first, *ANSWERED[4:])
    task = _task(env, task_id)
    assert (task.status, task.attempts) == ("connected", 1)

    second = _dial(env, task_id, NOON + dt.timedelta(minutes=5))
    _ami(env, second, *BUSY)
    task = _task(env, task_id)
    assert (task.status, task.attempts) == ("not_reached", 2)

    # a call the PBX never took does not count, and leaves the task as it was
    third = _dial(env, task_id, NOON + dt.timedelta(minutes=10))
    with db.unit_of_work(env.sessions) as s:
        mark_not_placed(s, s.get(Call, third))
        mark_not_placed(s, s.get(Call, third))  # twice: harmless
    task = _task(env, task_id)
    assert (task.status, task.attempts) == ("not_reached", 2)
    with env.sessions() as s:
        call = s.get(Call, third)
        assert (call.state, call.outcome) == ("failed", "not_placed")
        assert s.query(CallEvent).filter_by(call_id=third, source="khhf").count() == 1


def test_not_placed_and_a_late_channel_agree_whoever_comes_first(env):
    """The web UI closes a call the bridge refused; the PBX took it after all:
    the call's events decide, and the call stands."""
    task_id = env.task_for("8001", "13812345678")
    call_id = _dial(env, task_id)
    with db.unit_of_work(env.sessions) as s:
        call = s.get(Call, call_id)
        mark_not_placed(s, call, call.requested_at)  # before the channel's own events
    _ami(env, call_id, *ANSWERED[:4])
    with env.sessions() as s:
        call = s.get(Call, call_id)
        assert (call.state, call.outcome) == ("connected", None)
        assert s.get(Task, task_id).status == "connected"


@pytest.mark.parametrize("outcome,events_,status", [
    ("answered", ANSWERED, "connected"), ("busy", BUSY, "not_reached")])
def test_a_call_given_up_as_not_placed_and_reported_whole_later_is_whole(
        env, tmp_path, outcome, events_, status):
    """The bridge died after Asterisk took the Originate, before it answered
    the web UI, which closed the call as not placed; the restarted bridge
    reads the whole call from CEL in one batch: the task follows it (a
    customer who answered is not called again as if nobody had), and an
    answered call has its recording's path back (drill 7 found both)."""
    task_id = env.task_for("8001", "13812345678")
    call_id = _dial(env, task_id)
    with db.unit_of_work(env.sessions) as s:
        call = s.get(Call, call_id)
        planned = call.recording_path
        mark_not_placed(s, call, call.requested_at)
        assert call.recording_path is None   # nobody talked, it seems
    assert _task(env, task_id).status == "pending"
    bridge = Bridge(env.settings, env.engine, state_dir=tmp_path / "bridge")
    bridge.apply_ami(_ami_events(env, call_id, *events_))
    with env.sessions() as s:
        call = s.get(Call, call_id)
        assert call.outcome == outcome
        assert call.recording_path == (planned if outcome == "answered" else None)
    task = _task(env, task_id)
    assert (task.status, task.attempts) == (status, 1)


def test_hang_ups_seen_before_the_answer_do_not_leave_the_task_or_the_recording_behind(
        env, tmp_path):
    """A restarted bridge applies the live hang-ups before its reconciler has
    read the answer from CEL: for a moment the call looks unanswered (its
    task not reached, no recording); once the answer is stored the row, the
    task and the recording's path are those of an answered call."""
    task_id = env.task_for("8001", "13812345678")
    call_id = _dial(env, task_id)
    with env.sessions() as s:
        planned = s.get(Call, call_id).recording_path
    events_ = _ami_events(env, call_id, *ANSWERED)
    bridge = Bridge(env.settings, env.engine, state_dir=tmp_path / "bridge")
    bridge.apply_ami(events_[:3] + events_[4:])   # everything but the customer's answer
    assert _task(env, task_id).status == "not_reached"
    bridge.apply_ami(events_[3:4])
    with env.sessions() as s:
        call = s.get(Call, call_id)
        assert (call.outcome, call.recording_path) == ("answered", planned)
    task = _task(env, task_id)
    assert (task.status, task.attempts) == ("connected", 1)


def test_a_result_filed_during_the_call_is_kept(env):
    task_id = env.task_for("8001", "13812345678")
    call_id = _dial(env, task_id)
    _ami(env, call_id, *ANSWERED[:4])
    with db.unit_of_work(env.sessions) as s:
        tasks.file_result(s.get(Task, task_id), ResultCode(id=None, code="1", label="ok", is_final=True))
    _ami(env, call_id, *ANSWERED[4:])
    assert _task(env, task_id).status == "done"


def test_a_lost_call_is_closed_and_its_task_freed(env):
    task_id = env.task_for("8001", "13812345678")
    call_id = _dial(env, task_id)
    _ami(env, call_id, *ANSWERED[:4])
    with db.unit_of_work(env.sessions) as s:
        call = s.get(Call, call_id)
        store.record(s, call, events.LOST, call.requested_at + dt.timedelta(seconds=64))
    with env.sessions() as s:
        call = s.get(Call, call_id)
        assert (call.state, call.outcome, call.talk_seconds) == ("ended", "lost", 60)
        assert s.get(Task, task_id).status == "connected"  # the customer answered
