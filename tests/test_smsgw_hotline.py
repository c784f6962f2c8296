"""The hotline's missed-call SMS, end to end: a real Asterisk and SIPp make
the missed call, the FastAGI service queues the SMS, the gateway daemon
(`python -m smsgw`) sends it to the loopback SMSC in UCS-2, and the SMSC's
delivery receipt marks it delivered."""

from __future__ import annotations

import subprocess
import sys

import pytest
from sqlalchemy import select

from khhf import config
from khhf.models import SmsMessage, Task
from simkit.smsc import SmscProcess
from tests.test_hotline_e2e import hotline_pbx  # noqa: F401  (the fixture: Asterisk + AGI)
from tests.test_smsgw import wait_for

pytestmark = pytest.mark.pbx


def test_missed_call_sms_goes_out_through_the_gateway_and_is_delivered(hotline_pbx, tmp_path):  # noqa: F811
    hp = hotline_pbx
    smsc = SmscProcess(tmp_path).start()
    conf = tmp_path / "smsgw.conf"
    config.write_new(conf, home=tmp_path, database_url=hp.h.settings.database_url,
                     smsc_host="127.0.0.1", smsc_port=smsc.port, sms_source_addr="10658")
    with open(tmp_path / "smsgw.err", "w") as err:
        gateway = subprocess.Popen([sys.executable, "-m", "smsgw", "--config", str(conf)],
                                   stderr=err)
    try:
        county = hp.county("g1", "13900000031")
        own = hp.manager(county, "8111", "13700000031", on_duty=True)
        hp.customer(county, "13800000031", own)
        desk = hp.h.desk_phone("8111", "ring_forever.xml")
        mobile_leg = hp.h.trunk("ring_forever.xml")
        caller = hp.call("13900000031", "008613800000031")
        assert caller.wait(40) == 0, caller.trace_summary()
        for party in (desk, mobile_leg):
            assert party.wait(10) == 0, party.trace_summary()
        call = hp.wait_ended("13800000031")
        assert call.outcome == "missed"

        def delivered():
            with hp.factory() as s:
                task = s.get(Task, call.task_id)
                row = s.scalar(select(SmsMessage).where(SmsMessage.task_id == task.id))
                return row if row is not None and row.receipt_status == "DELIVRD" else None
        row = wait_for(delivered, timeout=30, what="the missed-call SMS delivered")
    finally:
        gateway.terminate()
        rc = gateway.wait(10)
        smsc.stop()
    assert rc == 0
    [got] = [g for g in smsc.received() if g["to"] == "13700000031"]
    assert got["data_coding"] == 8 and got["from"] == "10658"
    assert bytes.fromhex(got["sm"]).decode("utf-16-be") == row.body
    assert "138****0031" in row.body and "未接来电" in row.body
    assert (row.status, row.manager_id, row.smpp_message_id) == ("sent", own, got["id"])
