"""The SMS result loop end to end, against the real parts: click-to-dial
through the AMI bridge to the real Asterisk, SIPp as desk phone and
customer, the jobs daemon (`python -m jobs`) queueing the prompt, the SMS
gateway daemon (`python -m smsgw`) sending it to the loopback SMSC
(simkit/smsc.py) and taking the manager's reply from it (deliver_sm)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import func, select

from khhf import config, db
from khhf.models import Feedback, ResultCode, SmsMessage, Task
from simkit import factories
from simkit.bridge_env import BridgeEnv
from simkit.smsc import SmscProcess
from tests.test_smsgw import wait_for

pytestmark = pytest.mark.pbx

MOBILE = "13700008001"  # the manager at desk 8001 (simkit/bridge_env.py)


class Loop:
    """The bridge beside the session's Asterisk, an SMSC, and the two daemons."""

    def __init__(self, harness, workdir):
        self.env = BridgeEnv(harness, workdir).start()
        self.smsc = SmscProcess(workdir).start()
        self.conf = workdir / "khhf.conf"
        config.write_new(self.conf, home=workdir, database_url=self.env.settings.database_url,
                         smsc_host="127.0.0.1", smsc_port=self.smsc.port,
                         sms_source_addr="10658", sms_rate_per_second=50,
                         sms_prompt_delay_seconds=1, calling_window="00:00-24:00")
        self.workdir = workdir
        self.procs = {name: self._start(name) for name in ("smsgw", "jobs")}

    def _start(self, module):
        with open(self.workdir / f"{module}.err", "a") as err:
            return subprocess.Popen([sys.executable, "-m", module, "--config", str(self.conf)],
                                    stderr=err)

    def stop(self):
        for proc in self.procs.values():
            proc.terminate()
        codes = [proc.wait(15) for proc in self.procs.values()]
        self.smsc.stop()
        self.env.stop()
        return codes

    def texts_to(self, mobile: str) -> list[str]:
        """The messages the SMSC accepted for `mobile`, long ones joined by their UDH."""
        return self.smsc.texts().get(mobile, [])

    def call_answered(self, phone: str, task_type: str | None = None) -> int:
        """A click-to-dial that the customer answers and ends after 1 s."""
        desk = self.env.harness.desk_phone("8001")
        customer = self.env.harness.trunk("answer_hangup.xml", duration_ms=1000)
        call_id = self.env.dial("8001", phone, task_type=task_type)
        assert customer.wait(30) == 0 and desk.wait(30) == 0
        call = self.env.wait_final(call_id)
        assert (call.outcome, call.task_snapshot[0]) == ("answered", "connected")
        return call


@pytest.fixture(scope="module")
def loop(pbx_harness, tmp_path_factory):
    loop = Loop(pbx_harness, tmp_path_factory.mktemp("smsloop"))
    yield loop
    assert loop.stop() == [0, 0]


def prompt_for(loop, task_id, timeout=30):
    def queued_and_sent():
        with loop.env.sessions() as s:
            row = s.scalar(select(SmsMessage).where(SmsMessage.kind == "prompt",
                                                    SmsMessage.task_id == task_id))
            return row if row is not None and row.status == "sent" else None
    return wait_for(queued_and_sent, timeout=timeout, what="the prompt sent")


def answers(loop, contains: str) -> list[str]:
    return [t for t in loop.texts_to(MOBILE) if contains in t]


def test_a_call_ends_the_prompt_reaches_the_smsc_and_the_reply_files_the_result(loop):
    call = loop.call_answered("13812345601")
    prompt = prompt_for(loop, call.task_id)
    [text] = answers(loop, f"#{prompt.ref} ")
    assert text == prompt.body
    assert "138****5601" in text and "13812345601" not in text
    assert "1回访成功 4客户拒绝 5无人接听 6+时间 预约再拨（如 6 1201 1430）" in text
    assert loop.smsc.deliver(MOBILE, f"１ #{prompt.ref}")["ok"]

    def filed():
        with loop.env.sessions() as s:
            task = s.get(Task, call.task_id)
            return task if task.status == "done" else None
    wait_for(filed, what="the task done")
    with loop.env.sessions() as s:
        [feedback] = s.scalars(select(Feedback).where(Feedback.task_id == call.task_id))
        assert (feedback.channel, feedback.call_id) == ("sms", call.id)
    wait_for(lambda: answers(loop, f"已记录 #{prompt.ref} 138****5601：回访成功"),
             what="the confirmation at the SMSC")


def test_a_code_of_a_type_an_administrator_made_is_filed_by_sms(loop):
    """The task's type was made as an administrator makes one: the prompt
    carries its own menu, and its two-digit code files."""
    with db.unit_of_work(loop.env.sessions) as s:
        factories.custom_task_type(s)
    call = loop.call_answered("13812345605", task_type="care")
    prompt = prompt_for(loop, call.task_id)
    [text] = answers(loop, f"#{prompt.ref} ")
    assert "1关怀成功 2客户拒绝 3无人接听 7+时间 预约再拨（如 7 1201 1430） 12号码有误" in text
    assert loop.smsc.deliver(MOBILE, f"12 #{prompt.ref}")["ok"]

    def filed():
        with loop.env.sessions() as s:
            task = s.get(Task, call.task_id)
            return task if task.status == "done" else None
    wait_for(filed, what="the task done")
    with loop.env.sessions() as s:
        [feedback] = s.scalars(select(Feedback).where(Feedback.task_id == call.task_id))
        code = s.get(ResultCode, feedback.result_code_id)
        assert (feedback.channel, code.code, code.task_type.code) == ("sms", "12", "care")
    wait_for(lambda: answers(loop, f"已记录 #{prompt.ref} 138****5605：号码有误"),
             what="the confirmation at the SMSC")


def test_a_malformed_reply_gets_the_help_sms(loop):
    call = loop.call_answered("13812345602")
    prompt = prompt_for(loop, call.task_id)
    assert loop.smsc.deliver(MOBILE, "收到了")["ok"]
    [help_text] = wait_for(lambda: answers(loop, "未能识别"), what="the help SMS")
    assert f"#{prompt.ref} 138****5602" in help_text and "1回访成功" in help_text
    with loop.env.sessions() as s:
        assert s.get(Task, call.task_id).status == "connected"
    # the prompt is still open: a digit now files it
    assert loop.smsc.deliver(MOBILE, "4")["ok"]
    wait_for(lambda: answers(loop, f"已记录 #{prompt.ref} 138****5602：客户拒绝"),
             what="the confirmation")


def test_the_smsc_dropped_mid_run_loses_and_duplicates_nothing(loop):
    loop.smsc.kill()
    call = loop.call_answered("13812345603")

    def queued():
        with loop.env.sessions() as s:
            return s.scalar(select(SmsMessage).where(SmsMessage.kind == "prompt",
                                                     SmsMessage.task_id == call.task_id))
    # the prompt is queued while the SMSC is away, and waits for it
    wait_for(queued, what="the prompt queued")
    loop.smsc.start()
    prompt = prompt_for(loop, call.task_id, timeout=60)
    assert len(answers(loop, f"#{prompt.ref} 回访 138****5603")) == 1
    # the reply arrives twice (the phone, or the SMSC, sent it again): filed
    # once, confirmed once
    for _ in range(2):
        assert loop.smsc.deliver(MOBILE, "1")["ok"]
    confirmation = f"已记录 #{prompt.ref} 138****5603：回访成功"
    wait_for(lambda: answers(loop, confirmation), what="the confirmation")
    # the SMSC goes away again and comes back: nothing is sent a second time
    loop.smsc.kill()
    loop.smsc.start()
    wait_for(lambda: loop.smsc.command({"op": "ping"})["sessions"] >= 1, timeout=60,
             what="the gateway bound again")
    wait_for(lambda: _all_sent(loop), what="the outbox empty")
    with loop.env.sessions() as s:
        outcomes = s.scalars(select(SmsMessage.reply_outcome).where(
            SmsMessage.direction == "in", SmsMessage.body == "1",
            SmsMessage.id > prompt.id).order_by(SmsMessage.id)).all()
        assert outcomes == ["filed", "duplicate"]
        assert s.scalar(select(func.count()).select_from(Feedback).where(
            Feedback.task_id == call.task_id)) == 1
    assert len(answers(loop, confirmation)) == 1
    assert len(answers(loop, f"#{prompt.ref} 回访 138****5603")) == 1
    bodies = loop.texts_to(MOBILE)
    assert len(bodies) == len(set(bodies)), "a message reached the SMSC twice"


def _all_sent(loop) -> bool:
    with loop.env.sessions() as s:
        return not s.scalar(select(func.count()).select_from(SmsMessage).where(
            SmsMessage.direction == "out", SmsMessage.status.in_(("queued", "sending"))))
