"""The result by keypad, end to end: click-to-dial (service -> AMI bridge ->
real Asterisk), the desk phone (SIPp) answers, the customer (SIPp on the
trunk) answers and hangs up first, and the desk phone stays on the Chinese
prompt; it presses keys as RFC 4733 events, the FastAGI service (in a
thread, on the bridge's database) files the result with channel keypad.
The manager's ear is the test's (simkit/rtp.py): what the phone heard is
checked byte for byte against the shipped prompt."""

from __future__ import annotations

import os
import socket

import pytest
from sqlalchemy import select

from agi.routes import ROUTES, keypad_result
from khhf import db
from khhf.config import agi_key
from khhf.models import Feedback, ResultCode, Task
from khhf.shipped import shipped
from simkit import factories
from simkit.bridge_env import BridgeEnv
from simkit.harness import SIPP, AgiThread, PbxHarness, free_port
from simkit.rtp import PCMA, PCMU, RtpPhone

pytestmark = pytest.mark.pbx

PROMPTS = shipped("asterisk") / "sounds" / "zh"
TALK_MS = 1000
# payload type -> (SDP name, the prompts' file extension)
CODECS = {PCMU: ("PCMU", "ulaw"), PCMA: ("PCMA", "alaw")}


class Keypad:
    def __init__(self, harness, env, turns):
        self.h, self.env, self.turns = harness, env, turns

    def desk_with_phone(self, ext: str, phone: RtpPhone):
        """Desk phone `ext`: answers at once, its audio is `phone`'s."""
        port = self.h.register_desk_phone(ext)
        return self.h.party("answer_media.xml", local_ip="127.0.0.1", port=port,
                            keys={"ear_ip": phone.host, "ear_port": phone.port},
                            fill={"PT": phone.codec, "CODEC": CODECS[phone.codec][0]}).start()

    def feedback(self, call_id: int) -> list[Feedback]:
        with self.env.sessions() as s:
            rows = s.scalars(select(Feedback).where(Feedback.call_id == call_id)).all()
            s.expunge_all()
            return rows

    def turns_of(self, call_id: int) -> list[list[str]]:
        return [args for args in self.turns if args[:1] == [str(call_id)]]


@pytest.fixture(scope="module")
def kp(tmp_path_factory):
    if SIPP is None:
        pytest.fail("sipp is not installed: scripts/install installs Debian's sip-tester.")
    workdir = tmp_path_factory.mktemp("keypad")
    harness = PbxHarness(workdir, name=f"keypad{os.getpid()}")
    # our own FastAGI service, rendered into KHHF_AGI when the PBX starts
    harness.settings.agi_port = free_port(kind=socket.SOCK_STREAM)
    env = BridgeEnv(harness, workdir)
    turns = []

    async def keypad_turn(session, args):
        turns.append(list(args))   # which calls were asked, and each turn
        await keypad_result.route(session, args)

    agi = AgiThread(env.sessions, key=agi_key(harness.settings), port=harness.settings.agi_port,
                    routes={**ROUTES, "keypad-result": keypad_turn}).start()
    try:
        with harness:
            env.start()
            try:
                yield Keypad(harness, env, turns)
            finally:
                env.stop()
    finally:
        agi.stop()


@pytest.mark.parametrize("codec", [PCMU, PCMA], ids=["ulaw", "alaw"])
def test_keypad_result_after_the_customer_hangs_up_is_filed(kp, codec):
    """Whichever G.711 law the phone chose, it hears the prompt files of
    that law as they are (no transcoding), and its keys file the result."""
    ext = CODECS[codec][1]
    phone = RtpPhone(codec=codec)
    try:
        desk = kp.desk_with_phone("8001", phone)
        customer = kp.h.trunk("answer_hangup.xml", duration_ms=TALK_MS)
        call_id = kp.env.dial("8001", f"1381234567{codec}")
        assert customer.wait(30) == 0, customer.trace_summary()
        # the manager hears the Chinese prompt: the shipped file, byte for byte
        assert phone.wait_heard(PROMPTS / f"keypad-ask.{ext}"), f"{len(phone.audio())} bytes heard"
        phone.press("1")
        # read back: 您选择了 一，确认请按一，改选请按二
        assert phone.wait_heard(PROMPTS / f"keypad-you-chose.{ext}")
        assert phone.wait_heard(PROMPTS / f"keypad-confirm.{ext}")
        assert phone.heard(PROMPTS / "digits" / f"1.{ext}")
        phone.press("1")
        assert phone.wait_heard(PROMPTS / f"keypad-filed.{ext}")
        # then the PBX hangs up
        assert desk.wait(30) == 0, desk.trace_summary()
    finally:
        phone.close()
    call = kp.env.wait_final(call_id, recording=True)
    [fb] = kp.feedback(call_id)
    with kp.env.sessions() as s:
        assert s.get(ResultCode, fb.result_code_id).code == "1"
        assert s.get(Task, call.task_id).status == "done"
    assert fb.channel == "keypad" and fb.task_id == call.task_id
    # the prompt is not talk: who hung up, the talk time and the recording
    # are the customer's
    assert (call.outcome, call.hangup_by) == ("answered", "customer")
    assert call.talk_seconds <= 2
    assert abs(call.recording_seconds - TALK_MS / 1000) <= 0.5
    # the turns: ask, read back "1", confirm
    assert [t[2] for t in kp.turns_of(call_id)] == ["", "ask:1", f"confirm:{fb.result_code_id}:1"]


def test_a_two_digit_code_of_a_type_an_administrator_made_is_filed(kp):
    """The task's type was made as an administrator makes one (five codes,
    one of two digits): the phone keys in 1 2, hears 一 二 read back, confirms."""
    with db.unit_of_work(kp.env.sessions) as s:
        factories.custom_task_type(s)
    phone = RtpPhone(codec=PCMU)
    try:
        desk = kp.desk_with_phone("8001", phone)
        customer = kp.h.trunk("answer_hangup.xml", duration_ms=TALK_MS)
        call_id = kp.env.dial("8001", "13812345690", task_type="care")
        assert customer.wait(30) == 0, customer.trace_summary()
        assert phone.wait_heard(PROMPTS / "keypad-ask.ulaw")
        phone.press("12")
        assert phone.wait_heard(PROMPTS / "keypad-confirm.ulaw")
        assert phone.heard(PROMPTS / "digits" / "1.ulaw")
        assert phone.heard(PROMPTS / "digits" / "2.ulaw")
        phone.press("1")
        assert phone.wait_heard(PROMPTS / "keypad-filed.ulaw")
        assert desk.wait(30) == 0, desk.trace_summary()
    finally:
        phone.close()
    call = kp.env.wait_final(call_id)
    [fb] = kp.feedback(call_id)
    with kp.env.sessions() as s:
        code, task = s.get(ResultCode, fb.result_code_id), s.get(Task, call.task_id)
        assert (code.code, code.label, code.task_type.code) == ("12", "号码有误", "care")
        assert (task.status, task.task_type_id) == ("done", code.task_type_id)
    assert fb.channel == "keypad"


def test_hanging_up_without_a_key_files_nothing(kp):
    desk = kp.h.desk_phone("8002", "answer_hangup.xml", duration_ms=TALK_MS + 4000)
    customer = kp.h.trunk("answer_hangup.xml", duration_ms=TALK_MS)
    call_id = kp.env.dial("8002", "13812345679")
    assert customer.wait(30) == 0 and desk.wait(30) == 0, desk.trace_summary()
    call = kp.env.wait_final(call_id)
    assert kp.turns_of(call_id), "the manager was not asked"
    assert kp.feedback(call_id) == []
    assert call.task_snapshot == ("connected", 1)   # open: the SMS path asks next
    assert (call.outcome, call.hangup_by) == ("answered", "customer")


def test_manager_hangs_up_first_is_not_asked(kp):
    desk = kp.h.desk_phone("8003", "answer_hangup.xml", duration_ms=TALK_MS + 500)
    customer = kp.h.trunk("answer.xml")
    call_id = kp.env.dial("8003", "13812345680")
    assert desk.wait(30) == 0 and customer.wait(30) == 0
    call = kp.env.wait_final(call_id)
    assert (call.outcome, call.hangup_by) == ("answered", "manager")
    assert kp.turns_of(call_id) == [] and kp.feedback(call_id) == []


def test_customer_who_never_answered_is_not_asked_about(kp):
    desk = kp.h.desk_phone("8001")
    customer = kp.h.trunk("ring_forever.xml")
    call_id = kp.env.dial("8001", "13812345681")
    assert customer.wait(30) == 0 and desk.wait(30) == 0
    call = kp.env.wait_final(call_id)
    assert call.outcome == "no_answer"
    assert kp.turns_of(call_id) == [] and kp.feedback(call_id) == []
