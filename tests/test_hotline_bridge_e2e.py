"""The hotline's row survives the AGI service dying after its answer: a
customer (SIPp on the trunk's IP) calls the unified number of the session's
real Asterisk; the FastAGI service routes the call to the owning manager's
desk phone and is killed before its delayed write; the customer talks and
hangs up, with the service still gone. The AMI bridge writes the one row
from the hang-up's event. Then, with the service back, a second call's row
is the AGI's, not doubled by the bridge."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

import agi.server
from khhf import db
from khhf.config import agi_key
from khhf.models import Call, County, Manager
from simkit import factories
from simkit.bridge_env import UNIFIED, BridgeEnv
from simkit.harness import AgiThread, free_port

pytestmark = pytest.mark.pbx

CALLER = "13812347001"
TALK_MS = 2000


def _rows(env) -> list[Call]:
    with env.sessions() as s:
        rows = s.scalars(select(Call).where(Call.direction == "inbound",
                                            Call.customer_number == CALLER)
                         .order_by(Call.id)).all()
        s.expunge_all()
        return list(rows)


def _wait_rows(env, count: int, timeout: float = 30) -> list[Call]:
    """The caller's rows once `count` of them are ended (and stay `count`)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = _rows(env)
        if len(rows) >= count and all(r.state == "ended" for r in rows):
            return rows
        assert time.monotonic() < deadline, f"{count} ended rows expected, found {rows}"
        time.sleep(0.1)


def _call(h, caller_sipp_ms: int = TALK_MS):
    """The customer calls the unified number, talks `caller_sipp_ms` ms, hangs up."""
    return h.party("hotline_call_hangup.xml", local_ip=h.settings.trunk_host,
                   port=free_port(h.settings.trunk_host), remote=h.sip_target,
                   service=UNIFIED, keys={"caller": CALLER}, duration_ms=caller_sipp_ms).start()


def test_a_call_whose_agi_died_after_its_answer_gets_one_row_from_the_bridge(
        pbx_harness, tmp_path, monkeypatch):
    h = pbx_harness
    env = BridgeEnv(h, tmp_path).start()
    with db.unit_of_work(env.sessions) as s:
        owner = s.scalar(select(Manager).where(Manager.desk_extension == "8002"))
        owner.on_duty = True
        factories.customer(s, s.scalar(select(County)), CALLER, owner)
        owner_id = owner.id
    key = agi_key(h.settings)
    # the delayed write waits long enough that the kill surely comes first
    monkeypatch.setattr(agi.server, "DEFERRED_DELAY", 60.0)
    service = AgiThread(env.sessions, key=key).start()
    h.pbx.cli(f"dialplan set global KHHF_AGI agi://127.0.0.1:{service.port}/{key}")
    try:
        desk = h.desk_phone("8002", "answer.xml")
        caller = _call(h)
        deadline = time.monotonic() + 20
        while not service.server.pending:    # the route answered; its write waits
            assert time.monotonic() < deadline, "the AGI service never routed the call"
            time.sleep(0.01)
        service.kill()
        assert caller.wait(30) == 0, caller.trace_summary()
        assert desk.wait(10) == 0, desk.trace_summary()
        [row] = _wait_rows(env, 1)
        assert (row.state, row.outcome, row.manager_id, row.unified_number) == \
            ("ended", "desk", owner_id, UNIFIED)
        assert row.customer_id is not None and row.talk_seconds >= 1
        assert row.recording_path and row.recording_path.endswith(f"in-{row.uniqueid}.wav")

        # the service is back: its row, written after its answer and closed
        # by its hang-up route, stands alone beside the bridge's
        monkeypatch.setattr(agi.server, "DEFERRED_DELAY", 0.2)
        service = AgiThread(env.sessions, key=key, port=service.port).start()
        desk = h.desk_phone("8002", "answer.xml")
        caller = _call(h)
        assert caller.wait(30) == 0, caller.trace_summary()
        assert desk.wait(10) == 0, desk.trace_summary()
        first, second = _wait_rows(env, 2)
        assert first.id == row.id and second.uniqueid != row.uniqueid
        assert (second.outcome, second.manager_id) == ("desk", owner_id)
        time.sleep(2)  # the bridge's reconciler has read CEL again meanwhile
        assert [r.id for r in _rows(env)] == [first.id, second.id]
    finally:
        service.stop()
        s = h.settings
        h.pbx.cli(f"dialplan set global KHHF_AGI agi://{s.agi_host}:{s.agi_port}/{key}")
        env.stop()
        env.engine.dispose()
