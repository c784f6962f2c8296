"""A manager's SMS reply files the result whatever form of their mobile the
SMSC delivers as the sender: the real loopback SMSC (simkit/smsc.py) sends
the deliver_sm with the form and its TON/NPI, the gateway (smsgw) takes it
over SMPP, and the reply is matched to the manager's stored mobile
(13800138000) because the sender is normalised at the door
(khhf.services.sms.receive -> khhf.numbering.mobile)."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from sqlalchemy import select

from khhf import config, db
from khhf.models import Call, County, Manager, ResultCode, SmsMessage, Task
from khhf.services import sms_feedback, tasks
from simkit import factories
from simkit.smsc import SmscProcess
from smsgw import encoding
from tests.test_smsgw import Running, wait_for

MOBILE = "13800138000"   # as the manager's page stored it
TON_UNKNOWN, TON_INTERNATIONAL, TON_NATIONAL = 0, 1, 2
NPI_UNKNOWN, NPI_ISDN = 0, 1

# (sender as the SMSC delivers it, TON, NPI)
FORMS = [
    ("13800138000", TON_UNKNOWN, NPI_UNKNOWN),
    ("13800138000", TON_NATIONAL, NPI_ISDN),
    ("8613800138000", TON_INTERNATIONAL, NPI_ISDN),
    ("8613800138000", TON_UNKNOWN, NPI_UNKNOWN),
    ("+8613800138000", TON_INTERNATIONAL, NPI_ISDN),
    ("+8613800138000", TON_UNKNOWN, NPI_ISDN),
    ("008613800138000", TON_UNKNOWN, NPI_ISDN),
    ("013800138000", TON_NATIONAL, NPI_ISDN),
    ("138 0013 8000", TON_UNKNOWN, NPI_UNKNOWN),
    ("138-0013-8000", TON_NATIONAL, NPI_ISDN),
    ("+86 138-0013-8000", TON_UNKNOWN, NPI_UNKNOWN),
    # an SMSC that labels the national form international
    ("13800138000", TON_INTERNATIONAL, NPI_ISDN),
]


class Loop:
    """One database, the SMSC and the gateway, shared by the module's tests."""

    def __init__(self, workdir):
        settings = config.write_new(workdir / "khhf.conf", home=workdir)
        self.settings = dataclasses.replace(settings, sms_prompt_delay_seconds=0)
        self.engine = db.make_engine(settings.database_url)
        db.create_schema(self.engine)
        self.factory = db.session_factory(self.engine, writer=True)
        with self.factory() as s:
            county = factories.county(s, "demo", "示范县", unified="13900000000")
            self.manager_id = factories.manager(s, county, "li", desk="8001",
                                                mobile=MOBILE).id
            self.county_id = county.id
            factories.task_type(s)
            s.commit()
        self.smsc = SmscProcess(workdir).start()
        self.running = Running(self.factory, self.smsc, settings=self.settings)
        self.running.__enter__()
        wait_for(lambda: self.smsc.command({"op": "ping"})["sessions"] >= 1, what="bind")

    def stop(self):
        self.running.__exit__(None, None, None)
        self.smsc.stop()
        self.engine.dispose()

    def prompted(self, phone: str) -> tuple[int, str]:
        """A task whose answered call just ended, and its prompt, sent to the
        manager through the SMSC: (task id, the prompt's reference)."""
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        ended = now - dt.timedelta(seconds=30)
        with self.factory() as s:
            manager = s.get(Manager, self.manager_id)
            customer = factories.customer(s, s.get(County, self.county_id), phone, manager)
            task = factories.task(s, customer, manager)
            tasks.dial(task, ended - dt.timedelta(minutes=1))
            call = Call(direction="outbound", task_id=task.id, customer_id=customer.id,
                        manager_id=manager.id, county_id=self.county_id, customer_number=phone,
                        state="ended", requested_at=ended - dt.timedelta(minutes=1),
                        answer_at=ended - dt.timedelta(seconds=20), end_at=ended,
                        outcome="answered")
            s.add(call)
            s.flush()
            tasks.follow_call(s, task, call, ended)
            assert sms_feedback.send_prompts(s, self.settings, now, call_ids=[call.id]) == 1
            s.commit()
            prompt = s.scalar(select(SmsMessage).where(SmsMessage.call_id == call.id))
            task_id, prompt_id, ref = task.id, prompt.id, prompt.ref

        def sent():
            with self.factory() as s:
                row = s.get(SmsMessage, prompt_id)
                return (row.status, row.peer_number) == ("sent", MOBILE)
        wait_for(sent, what="the prompt sent to the SMSC")
        return task_id, ref


@pytest.fixture(scope="module")
def loop(tmp_path_factory):
    running = Loop(tmp_path_factory.mktemp("sender-forms"))
    yield running
    running.stop()


@pytest.mark.parametrize("sender,ton,npi", FORMS)
def test_a_reply_from_the_managers_mobile_in_any_form_files_the_result(loop, sender, ton, npi):
    phone = f"1360000{FORMS.index((sender, ton, npi)):04d}"
    task_id, ref = loop.prompted(phone)
    assert loop.smsc.deliver(sender, f"1 #{ref}", ton=ton, npi=npi)["ok"]

    def reply():
        with loop.factory() as s:
            return s.scalar(select(SmsMessage).where(
                SmsMessage.direction == "in", SmsMessage.status == "processed",
                SmsMessage.body == f"1 #{ref}"))
    row = wait_for(reply, what="the reply handled")
    assert (row.peer_number, row.manager_id, row.reply_outcome) == (MOBILE, loop.manager_id, "filed")
    with loop.factory() as s:
        task = s.get(Task, task_id)
        assert task.status == "done"
        assert s.get(ResultCode, task.result_code_id).code == "1"
    # and the confirmation went back to the same mobile
    wait_for(lambda: any(got["to"] == MOBILE and "已记录" in _text(got) and f"#{ref} " in
                         _text(got) for got in loop.smsc.received()),
             what="the confirmation at the SMSC")


def _text(got: dict) -> str:
    return encoding.join([(got["data_coding"], got["esm_class"], bytes.fromhex(got["sm"]))])
