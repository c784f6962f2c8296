"""The bridge's incremental path (store.LiveFacts): the facts of calls in
progress kept between batches and only new events folded in. It is a
shortcut, never the truth: each test ends with the row a full recompute
from the stored events gives."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from ami_bridge.bridge import Bridge
from khhf import db
from khhf.calls import store
from khhf.models import Call, CallEvent
from simkit.bridge_env import BridgeEnv, NoPbx
from tests.test_task_states import ANSWERED, _ami_events, _dial, _task


@pytest.fixture
def env(tmp_path):
    return BridgeEnv(NoPbx(tmp_path), tmp_path)  # database and seed only


def _row(env, call_id) -> dict:
    with env.sessions() as s:
        call = s.get(Call, call_id)
        return {key: getattr(call, key) for key in store.DERIVED}


def _recomputed(env, call_id) -> dict:
    """The row a full recompute gives (rolled back: it only reads)."""
    with env.sessions() as s:
        call = store.recompute(s, call_id)
        row = {key: getattr(call, key) for key in store.DERIVED}
        s.rollback()
        return row


def _stored(env, call_id) -> int:
    with env.sessions() as s:
        return s.scalar(select(func.count()).select_from(CallEvent)
                        .where(CallEvent.call_id == call_id))


@pytest.fixture
def call(env):
    return _dial(env, env.task_for("8001", "13812345678"))


def test_events_folded_batch_by_batch_give_the_full_recompute_row(env, call, tmp_path):
    events_ = _ami_events(env, call, *ANSWERED)
    bridge = Bridge(env.settings, env.engine, state_dir=tmp_path / "bridge")
    for event in events_:
        bridge.apply_ami([event])
        assert _row(env, call) == _recomputed(env, call)
    assert bridge.live.hits == len(events_) and bridge.live.misses == 0
    assert _row(env, call)["outcome"] == "answered"
    assert len(bridge.live) == 0  # final: forgotten
    with env.sessions() as s:
        task = _task(env, s.get(Call, call).task_id)
    assert (task.status, task.attempts) == ("connected", 1)


def test_a_restarted_bridge_rebuilds_the_facts_from_the_stored_events(env, call, tmp_path):
    events_ = _ami_events(env, call, *ANSWERED)
    Bridge(env.settings, env.engine, state_dir=tmp_path / "bridge").apply_ami(events_[:4])
    restarted = Bridge(env.settings, env.engine, state_dir=tmp_path / "bridge")
    restarted.apply_ami(events_[4:])
    assert restarted.live.misses == 1  # not kept: read again
    assert _row(env, call) == _recomputed(env, call)
    assert (_row(env, call)["state"], _row(env, call)["outcome"]) == ("ended", "answered")


def test_an_evicted_call_is_read_again(env, call, tmp_path):
    events_ = _ami_events(env, call, *ANSWERED)
    bridge = Bridge(env.settings, env.engine, state_dir=tmp_path / "bridge")
    bridge.live.limit = 0  # nothing kept between batches
    bridge.apply_ami(events_[:4])
    bridge.apply_ami(events_[4:])
    assert bridge.live.misses == 1
    assert _row(env, call) == _recomputed(env, call)
    assert _row(env, call)["outcome"] == "answered"


def test_an_event_another_writer_stored_is_not_missed(env, call, tmp_path):
    """The customer's answer reaches the database by another way (the
    reconciler, another process) between two batches: the kept facts lack
    it, the count of stored events says so, and the call is read again."""
    events_ = _ami_events(env, call, *ANSWERED)
    bridge = Bridge(env.settings, env.engine, state_dir=tmp_path / "bridge")
    bridge.apply_ami(events_[:3])
    with db.unit_of_work(env.sessions) as s:
        store.store_events(s, [store.raw_from_ami(events_[3])])
    bridge.apply_ami(events_[4:])
    assert bridge.live.misses == 1
    assert _row(env, call) == _recomputed(env, call)
    assert _row(env, call)["outcome"] == "answered"


def test_an_event_delivered_twice_is_stored_and_folded_once(env, call, tmp_path):
    events_ = _ami_events(env, call, *ANSWERED)
    bridge = Bridge(env.settings, env.engine, state_dir=tmp_path / "bridge")
    bridge.apply_ami(events_[:3] + [events_[2]])     # twice in one batch
    bridge.apply_ami(events_[2:4])                   # and again in the next
    assert _stored(env, call) == 4
    assert bridge.live.hits == 2 and bridge.live.misses == 0
    bridge.apply_ami(events_[4:] + events_[:2])
    assert _stored(env, call) == len(events_)
    assert _row(env, call) == _recomputed(env, call)
    assert _row(env, call)["outcome"] == "answered"
