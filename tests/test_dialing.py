"""One-click dial refuses, before anything rings, with a reason for each case."""

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import select

from khhf import db
from khhf.config import parse_window
from khhf.models import AuditLog, Call, Customer, Manager, Task, UnifiedNumber, User
from khhf.services import ValidationError
from khhf.services.dialing import request_call
from simkit.bridge_env import BridgeEnv, NoPbx

# 03:00 UTC is 11:00 in Asia/Shanghai: inside the default window
NOON = dt.datetime(2026, 11, 27, 3, 0)


@pytest.fixture
def env(tmp_path):
    env = BridgeEnv(NoPbx(tmp_path), tmp_path)  # database and seed only
    env.settings = dataclasses.replace(env.settings, calling_window="08:00-21:00")
    return env


def attempt(env, username, task_id, now=NOON):
    with db.unit_of_work(env.sessions) as s:
        user = s.scalar(select(User).where(User.username == username))
        return request_call(s, env.settings, user, task_id, now=now).id


def refusal(env, username, task_id, now=NOON) -> str:
    with pytest.raises(ValidationError) as err:
        attempt(env, username, task_id, now)
    return str(err.value)


def test_a_good_request_writes_the_call_row(env):
    task_id = env.task_for("8001", "13812345678")
    call_id = attempt(env, "m8001", task_id)
    with env.sessions() as s:
        call = s.get(Call, call_id)
        assert (call.state, call.unified_number, call.customer_number) == \
            ("requested", "13900000000", "13812345678")
        assert call.linkedid == call.uniqueid and call.uniqueid.startswith(f"khhf-{call_id}-")
        assert call.recording_path == f"2026/11/27/{call_id}.wav"
        assert s.get(Task, task_id).status == "dialing"
        entry = s.scalars(select(AuditLog)).one()
        assert "138****5678" in entry.object_name and "13812345678" not in entry.detail


def test_refusals(env):
    mine = env.task_for("8001", "13812345678")
    assert "not yours" in refusal(env, "m8002", mine)
    assert "not yours" in refusal(env, "m8001", 9999)
    evening = dt.datetime(2026, 11, 27, 13, 30)  # 21:30 in Shanghai
    assert "between 08:00-21:00" in refusal(env, "m8001", mine, now=evening)
    with db.unit_of_work(env.sessions) as s:
        s.scalar(select(Customer)).do_not_call = True
    assert "do-not-call" in refusal(env, "m8001", mine)
    with db.unit_of_work(env.sessions) as s:
        s.scalar(select(Customer)).do_not_call = False
        s.get(Task, mine).attempts = 3
    assert "3 call attempts" in refusal(env, "m8001", mine)
    with db.unit_of_work(env.sessions) as s:
        s.get(Task, mine).attempts = 0
    attempt(env, "m8001", mine)
    other = env.task_for("8001", "13812345679")
    assert "already on a call" in refusal(env, "m8001", other)
    theirs = env.task_for("8002", "13812345670")
    with db.unit_of_work(env.sessions) as s:
        s.scalar(select(Manager).where(Manager.desk_extension == "8002")).desk_extension = None
    assert "no desk phone" in refusal(env, "m8002", theirs)
    # nothing was half-written by any refusal: one call row, from the one success
    with env.sessions() as s:
        assert len(s.scalars(select(Call)).all()) == 1


def test_a_unified_number_the_bridge_would_refuse_is_refused_before_anything_rings(env):
    task_id = env.task_for("8001", "13812345678")
    with db.unit_of_work(env.sessions) as s:
        # stored before the county form checked it as Originate does
        s.scalar(select(UnifiedNumber)).number = "12345678901"
    assert "unified number 12345678901 cannot be shown on calls" in \
        refusal(env, "m8001", task_id)


def test_window_parsing():
    assert parse_window("08:00-21:00") == (dt.time(8), dt.time(21))
    for bad in ("8-21", "21:00-08:00", "soon"):
        with pytest.raises(ValueError, match="calling_window"):
            parse_window(bad)
