"""The unified-number pool end to end, through a real Asterisk and SIPp: the
dialing service chooses a number (khhf.services.number_pool), the bridge
originates, and the carrier (SIPp on the trunk's address) sees the chosen
number in From and P-Asserted-Identity; a rested or retired number takes no
new call but still routes the hotline (the FastAGI service in a thread); and
when the simulated carrier's customers stop answering one number, its answer
rate in the per-number report falls and the pool warns of it."""

from __future__ import annotations

import dataclasses
import os
import socket
import time

import pytest
from sqlalchemy import select

from khhf import db
from khhf.config import agi_key
from khhf.models import Call, Manager, NumberState, User, utcnow
from khhf.services import ValidationError, number_pool
from khhf.services.dialing import request_call
from simkit.bridge_env import POOL, BridgeEnv
from simkit.harness import SIPP, AgiThread, PbxHarness, free_port

pytestmark = pytest.mark.pbx

FIRST, SECOND = POOL
NOBODY = "10000000000"   # a From no call shows: the carrier answers every call
TALK_MS = 800
# the manager hangs up a moment after the customer: during the keypad
# result's prompt (asterisk/extensions.d/30-outbound.conf), which would
# otherwise wait for keys
DESK_MS = 2500


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    if SIPP is None:
        pytest.fail("sipp is not installed: scripts/install installs Debian's sip-tester.")
    workdir = tmp_path_factory.mktemp("number-pool")
    harness = PbxHarness(workdir, name=f"pool{os.getpid()}")
    # our own FastAGI service for the hotline, rendered into KHHF_AGI at up()
    harness.settings.agi_port = free_port(kind=socket.SOCK_STREAM)
    env = BridgeEnv(harness, workdir)
    agi = AgiThread(env.sessions, key=agi_key(harness.settings),
                    port=harness.settings.agi_port).start()
    try:
        with harness:
            env.start()
            try:
                yield env
            finally:
                env.stop()
    finally:
        agi.stop()


def call_and_see(env, carrier, phone: str) -> tuple[Call, str, str]:
    """Dial `phone` as manager 8001; (the ended call, From and PAI of the
    INVITE the carrier got for it)."""
    before = len(carrier.received("INVITE"))
    call = env.wait_final(env.dial("8001", phone), timeout=40)
    deadline = time.monotonic() + 10
    while len(carrier.received("INVITE")) == before and time.monotonic() < deadline:
        time.sleep(0.1)
    invite = carrier.received("INVITE")[before]
    assert invite.first_line.startswith(f"INVITE sip:{phone}@"), invite.first_line
    return call, invite.header("From"), invite.header("P-Asserted-Identity")


def set_state(env, number: str, state: str) -> None:
    with db.unit_of_work(env.sessions) as s:
        number_pool.set_state(s, None, "test", number_pool.find(s, number), state)


def test_numbers_alternate_and_the_carrier_sees_the_chosen_one(env):
    h = env.harness
    desk = h.desk_phone("8001", "answer_hangup.xml", calls=4, duration_ms=DESK_MS)
    carrier = h.trunk("carrier_shuns.xml", calls=4, fill={"SHUNNED": NOBODY, "TALK_MS": TALK_MS})
    shown = []
    for phone in ("13812340001", "13812340002", "13812340001", "13812340003"):
        call, from_, pai = call_and_see(env, carrier, phone)
        assert call.outcome == "answered", call.outcome
        # the carrier sees exactly the number the call row says was chosen
        assert f"sip:{call.unified_number}@" in from_ and f"sip:{call.unified_number}@" in pai
        shown.append(call.unified_number)
    # a tie: the primary; the least used; the number customer 1 saw; the least used
    assert shown == [FIRST, SECOND, FIRST, SECOND]
    assert carrier.wait(20) == 0, carrier.trace_summary()
    assert desk.wait(20) == 0, desk.trace_summary()


def test_a_rested_number_takes_no_new_call_and_still_routes_the_hotline(env):
    h = env.harness
    set_state(env, FIRST, NumberState.RESTING)
    desk = h.desk_phone("8001", "answer_hangup.xml", calls=1, duration_ms=DESK_MS)
    carrier = h.trunk("carrier_shuns.xml", calls=1, fill={"SHUNNED": NOBODY, "TALK_MS": TALK_MS})
    # customer 1 learned the first number, but it rests: the second shows
    call, from_, pai = call_and_see(env, carrier, "13812340001")
    assert call.unified_number == SECOND and f"sip:{SECOND}@" in from_ and \
        f"sip:{SECOND}@" in pai
    assert desk.wait(20) == 0
    # the second retired too: nothing usable, refused before anything rings
    set_state(env, SECOND, NumberState.RETIRED)
    task_id = env.task_for("8001", "13812340004")
    with pytest.raises(ValidationError, match="resting or retired"):
        with db.unit_of_work(env.sessions) as s:
            request_call(s, env.settings, s.scalar(select(User).where(User.username == "m8001")),
                         task_id)
    # and yet both numbers still reach the hotline: the customer's own manager answers
    with db.unit_of_work(env.sessions) as s:
        s.scalar(select(Manager).where(Manager.desk_extension == "8001")).on_duty = True
    try:
        for number in (FIRST, SECOND):
            desk = h.desk_phone("8001", "answer_hangup.xml", duration_ms=TALK_MS)
            caller = h.party("hotline_call.xml", local_ip=h.settings.trunk_host,
                             port=free_port(h.settings.trunk_host), remote=h.sip_target,
                             service=number, keys={"caller": "13812340001"}).start()
            assert caller.wait(30) == 0, caller.trace_summary()
            assert desk.wait(10) == 0, desk.trace_summary()
            with env.sessions() as s:
                inbound = s.scalars(select(Call).where(Call.direction == "inbound")
                                    .order_by(Call.id.desc())).first()
            assert (inbound.unified_number, inbound.outcome) == (number, "desk")
    finally:
        with db.unit_of_work(env.sessions) as s:
            s.scalar(select(Manager).where(Manager.desk_extension == "8001")).on_duty = False
        set_state(env, FIRST, NumberState.ACTIVE)
        set_state(env, SECOND, NumberState.ACTIVE)


def test_the_report_shows_a_number_falling_when_the_carrier_stops_answering_it(env):
    h = env.harness
    settings = dataclasses.replace(env.settings, number_watch_min_calls=2,
                                   number_watch_percent=90)
    today = settings.local(utcnow()).date()
    with env.sessions() as s:
        county = s.scalar(select(Manager)).county
        # the calls of the tests above, if they ran: every one answered
        before = number_pool.by_day(s, settings, county, today, today).get(
            (today, SECOND), number_pool.NumberFigures())
        assert before.answered == before.calls
        assert number_pool.warnings(s, settings, county, utcnow()) == []
    # from now on the customers leave calls from the second number ringing
    carrier = h.trunk("carrier_shuns.xml", calls=4, fill={"SHUNNED": SECOND, "TALK_MS": TALK_MS})
    outcomes = {}
    for phone, expected in zip(("13812340011", "13812340012", "13812340013", "13812340014"),
                               (FIRST, SECOND, FIRST, SECOND)):
        # the desk phone hangs up after an answered call, or is hung up on
        # when the customer never answers
        desk = h.desk_phone("8001", "answer_hangup.xml", duration_ms=DESK_MS) \
            if expected == FIRST else h.desk_phone("8001")
        call, from_, _ = call_and_see(env, carrier, phone)
        assert f"sip:{call.unified_number}@" in from_
        assert desk.wait(20) == 0, desk.trace_summary()
        outcomes.setdefault(call.unified_number, []).append(call.outcome)
    assert outcomes == {FIRST: ["answered"] * 2, SECOND: ["no_answer"] * 2}
    assert carrier.wait(20) == 0, carrier.trace_summary()
    with env.sessions() as s:
        county = s.scalar(select(Manager)).county
        after = number_pool.by_day(s, settings, county, today, today)[(today, SECOND)]
        assert (after.calls, after.answered) == (before.calls + 2, before.answered)
        assert after.answer_rate < (before.answer_rate or 1.0)
        [warning] = number_pool.warnings(s, settings, county, utcnow())
        assert warning.number == SECOND and warning.figures.answer_rate < warning.county_rate
