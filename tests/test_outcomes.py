"""Automatic outcomes (自动结果, khhf.services.outcomes): a call that did not
reach the customer is filed by the system, by the task type's rule, in the
unit of work that makes its row final; exactly once however often the
bridge replays the call's events; retried after the rule's delay, closed
with the rule's code at its limit; and the manager may correct it.

The events are fed as the AMI bridge feeds them (khhf.calls.store), on a
database without a PBX; tests/test_auto_outcomes_e2e.py does the same
through the real Asterisk and SIPp."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from khhf import audit, db
from khhf.calls import store
from khhf.models import AuditLog, Call, Feedback, ResultCode, Task, TaskType, User
from khhf.services import ValidationError, campaigns, results
from simkit import factories
from simkit.bridge_env import BridgeEnv, NoPbx
from tests.test_task_states import BUSY, DESK, NOON, TRUNK, _ami, _dial

EMPTY = [("Newchannel", DESK, {}), ("Newstate", DESK, {"ChannelStateDesc": "Up"}),
         ("Newchannel", TRUNK, {}), ("Hangup", TRUNK, {"Cause": "1"}),
         ("Hangup", DESK, {"Cause": "16"})]
REJECTED = [*BUSY[:3], ("Hangup", TRUNK, {"Cause": "21"}), BUSY[4]]


@pytest.fixture
def env(tmp_path):
    env = BridgeEnv(NoPbx(tmp_path), tmp_path)  # database and seed only
    with db.unit_of_work(env.sessions) as s:
        factories.automatic_task_type(s, retry_minutes=30, max_retries=1)
    return env


def task_of(env, phone):
    return env.task_for("8001", phone, "auto")


def state(env, task_id):
    """(status, result code, appointment, [(channel, code) of its feedback])."""
    with env.sessions() as s:
        task = s.get(Task, task_id)
        filed = s.execute(select(Feedback.channel, ResultCode.code)
                          .join(ResultCode, ResultCode.id == Feedback.result_code_id)
                          .where(Feedback.task_id == task_id).order_by(Feedback.id)).all()
        code = task.result_code.code if task.result_code else None
        return task.status, code, task.appointment_at, [tuple(f) for f in filed]


def call_end(env, call_id):
    with env.sessions() as s:
        return s.get(Call, call_id).end_at


def test_a_busy_call_is_filed_by_the_system_and_due_again_after_the_delay(env):
    task_id = task_of(env, "13812340101")
    call_id = _dial(env, task_id)
    _ami(env, call_id, *BUSY)
    status, code, due, filed = state(env, task_id)
    assert (status, code, filed) == ("pending", "7", [("system", "7")])
    assert due == call_end(env, call_id) + dt.timedelta(minutes=30)
    with env.sessions() as s:
        entry = s.scalar(select(AuditLog).where(AuditLog.object_type == "feedback"))
        detail = json.loads(entry.detail)
        assert (entry.username, entry.action, detail["channel"]) == (audit.SYSTEM, "create",
                                                                    "system")
        assert detail["fields"] == {"result": "7 忙线", "outcome": "busy", "retry_minutes": 30}
        assert "138****0101" in entry.object_name


def test_exactly_once_when_the_bridge_replays_and_reconciles(env):
    task_id = task_of(env, "13812340102")
    call_id = _dial(env, task_id)
    _ami(env, call_id, *BUSY)
    before = state(env, task_id)
    _ami(env, call_id, *BUSY)  # the same events again: a restarted bridge
    for _ in range(2):         # the reconciler recomputes the row, twice
        with db.unit_of_work(env.sessions) as s:
            store.recompute(s, call_id)
    assert state(env, task_id) == before
    with env.sessions() as s:
        assert s.scalar(select(func.count()).select_from(Feedback)) == 1
        assert s.scalar(select(func.count()).select_from(AuditLog)
                        .where(AuditLog.object_type == "feedback")) == 1
    # and the database holds it too: a second system result for the call is refused
    with pytest.raises(IntegrityError), db.unit_of_work(env.sessions) as s:
        first = s.scalar(select(Feedback))
        s.add(Feedback(task_id=task_id, call_id=call_id, manager_id=first.manager_id,
                       result_code_id=first.result_code_id, channel="system"))


def test_retried_at_most_max_retries_times_then_closed_with_the_closing_code(env):
    task_id = task_of(env, "13812340103")
    first = _dial(env, task_id)
    _ami(env, first, *BUSY)
    assert state(env, task_id)[:2] == ("pending", "7")
    second = _dial(env, task_id, NOON + dt.timedelta(minutes=31))
    _ami(env, second, *BUSY)
    status, code, due, filed = state(env, task_id)
    assert (status, code, due, filed) == ("done", "9", None, [("system", "7"), ("system", "9")])


def test_an_empty_number_closes_at_once_and_an_unmapped_outcome_waits_for_the_manager(env):
    empty = task_of(env, "13812340104")
    _ami(env, _dial(env, empty), *EMPTY)
    assert state(env, empty) == ("done", "5", None, [("system", "5")])
    with db.unit_of_work(env.sessions) as s:  # this site files rejected calls itself
        auto = s.scalar(select(TaskType).where(TaskType.code == "auto"))
        campaigns.save_task_type(s, None, "", auto, **{
            k: getattr(auto, k) for k in ("code", "name", "max_attempts")},
            codes=[{"code": c.code, "label": c.label, "is_success": c.is_success,
                    "is_final": c.is_final} for c in auto.result_codes],
            rules=[campaigns.rule_fields(r) for r in auto.outcome_rules
                   if r.outcome != "rejected"])
    rejected = task_of(env, "13812340105")
    call_id = _dial(env, rejected)
    _ami(env, call_id, *REJECTED)
    with env.sessions() as s:
        assert s.get(Call, call_id).outcome == "rejected"
    assert state(env, rejected) == ("not_reached", None, None, [])


def test_a_result_filed_during_the_call_wins(env):
    task_id = task_of(env, "13812340106")
    call_id = _dial(env, task_id)
    _ami(env, call_id, *BUSY[:3])
    with db.unit_of_work(env.sessions) as s:
        user = s.scalar(select(User).where(User.username == "m8001"))
        code = s.scalar(select(ResultCode).join(Task, Task.task_type_id == ResultCode.task_type_id)
                        .where(Task.id == task_id, ResultCode.code == "6"))
        results.file_result(s, user, task_id, code.id, now=NOON)
    _ami(env, call_id, *BUSY)
    assert state(env, task_id)[3] == [("web", "6")]


def _file(env, task_id, digits, appointment_at=None):
    with db.unit_of_work(env.sessions) as s:
        user = s.scalar(select(User).where(User.username == "m8001"))
        code = s.scalar(select(ResultCode).join(Task, Task.task_type_id == ResultCode.task_type_id)
                        .where(Task.id == task_id, ResultCode.code == digits))
        results.file_result(s, user, task_id, code.id, appointment_at=appointment_at,
                            now=NOON + dt.timedelta(hours=1))


def test_the_manager_corrects_a_system_result_even_one_that_closed_the_task(env):
    task_id = task_of(env, "13812340107")
    _ami(env, _dial(env, task_id), *EMPTY)
    assert state(env, task_id)[:2] == ("done", "5")
    # the number exists after all: the customer called back and was surveyed
    _file(env, task_id, "1")
    assert state(env, task_id) == ("done", "1", None, [("system", "5"), ("web", "1")])
    with env.sessions() as s:
        entry = s.scalars(select(AuditLog).where(AuditLog.object_type == "feedback")
                          .order_by(AuditLog.id)).all()[-1]
        assert entry.username == "m8001" and json.loads(entry.detail)["corrects"] == "5 空号"
    # a manager's own result is not corrected that way: the task stays closed
    with pytest.raises(ValidationError, match="already closed"):
        _file(env, task_id, "2")
